"""What is measured at each evaluation: held-out loss, the in-context-learning score and the best
induction / previous-token head scores (Olsson et al. 2022). What these logs say about phase
changes -- and the ablation check of the ICL score -- is in interp.dynamics.

The in-context-learning (ICL) score is the loss at a late token minus the loss at an early
token of held-out text. Olsson et al. use tokens 500 and 50 of a 512-token context, averaged over
many documents. Our models have a 128-token context and are scored on a few hundred held-out
windows, where the loss of one token position is dominated by which tokens happen to sit there
(the single-token score swung by +-0.3 nats between neighbouring checkpoints). So we average
over position bands scaled to n_ctx: the late band is the last quarter of the context (tokens
96-127 of 128, around Olsson's 500/512), the early band tokens n_ctx/16 to 3n_ctx/16 (8-23 of
128, around 50/512), and report the mean over windows with its standard error. The score goes
negative when later tokens are predicted better because the model uses its context -- induction
heads are the main way small models do that.

`icl_positions` / `icl_token_score` keep Olsson's single-token version for comparison.

`repeat_bigram_gap` looks where induction heads act: the mean loss on held-out tokens that
complete a bigram already seen earlier in the window ([A][B] ... [A] -> [B], about 10% of KJV
tokens at n_ctx 128) minus the mean loss on all other tokens. A one-layer model already copies
tokens it has seen (skip-trigrams), so the gap is negative from early on; induction heads make
it jump further.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

from interp.models import Model

OLSSON_CONTEXT, OLSSON_EARLY, OLSSON_LATE = 512, 50, 500


def per_token_loss(logits: Float[Tensor, "batch pos vocab"], tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch pos_minus_1"]:
    """Cross-entropy of predicting token i+1 at position i."""
    return F.cross_entropy(logits[:, :-1].float().transpose(1, 2), tokens[:, 1:], reduction="none")


def icl_positions(n_ctx: int) -> tuple[int, int]:
    """(early, late) token indices: Olsson's 50 and 500 of 512, scaled to n_ctx."""
    early = max(1, round(OLSSON_EARLY * n_ctx / OLSSON_CONTEXT))
    late = min(n_ctx - 1, round(OLSSON_LATE * n_ctx / OLSSON_CONTEXT))
    return early, late


def icl_token_score(losses: Float[Tensor, "batch pos_minus_1"], n_ctx: int) -> float:
    """Olsson's single-token score: mean loss on the late token minus on the early token
    (column i of `losses` predicts token i+1)."""
    early, late = icl_positions(n_ctx)
    return float(losses[:, late - 1].mean() - losses[:, early - 1].mean())


def icl_bands(n_ctx: int) -> tuple[range, range]:
    """(early, late) bands of token indices: [n_ctx/16, 3 n_ctx/16) and [3 n_ctx/4, n_ctx)."""
    early = range(max(1, n_ctx // 16), max(2, 3 * n_ctx // 16))
    late = range(3 * n_ctx // 4, n_ctx)
    return early, late


def band_losses(losses: Float[Tensor, "batch pos_minus_1"], band: range) -> Float[Tensor, "batch band"]:
    """The per-token losses of the tokens in `band` (column i of `losses` predicts token i+1)."""
    return losses[:, band.start - 1 : band.stop - 1]


def icl_window_scores(losses: Float[Tensor, "batch pos_minus_1"], n_ctx: int) -> Float[Tensor, " batch"]:
    """Per held-out window: mean loss over the late band minus mean loss over the early band."""
    early, late = icl_bands(n_ctx)
    return band_losses(losses, late).mean(1) - band_losses(losses, early).mean(1)


def icl_score(losses: Float[Tensor, "batch pos_minus_1"], n_ctx: int) -> tuple[float, float]:
    """(mean, standard error) over windows of the late-band minus early-band loss, in nats."""
    per_window = icl_window_scores(losses.float(), n_ctx)
    se = float(per_window.std() / len(per_window) ** 0.5) if len(per_window) > 1 else float("nan")
    return float(per_window.mean()), se


def repeated_bigram_mask(tokens: Int[Tensor, "batch pos"]) -> Tensor:
    """bool [batch, pos-1]: column i (predicting token i+1) is True when the bigram
    (tokens[i], tokens[i+1]) already occurred at some j < i in the same window -- the tokens an
    induction head can predict by copying what followed the earlier occurrence."""
    prev, nxt = tokens[:, :-1], tokens[:, 1:]
    n = prev.shape[1]
    earlier = torch.ones(n, n, dtype=torch.bool, device=tokens.device).tril(-1)  # [i, j]: j < i
    same_prev = prev[:, :, None] == prev[:, None, :]
    same_next = nxt[:, :, None] == nxt[:, None, :]
    return (same_prev & same_next & earlier).any(-1)


def repeat_bigram_gap(losses: Float[Tensor, "batch pos_minus_1"], mask: Tensor) -> float:
    """Mean loss on repeated-bigram tokens minus mean loss on the rest (nan if either is empty)."""
    if not mask.any() or mask.all():
        return float("nan")
    return float(losses[mask].mean() - losses[~mask].mean())


@dataclass
class EvalData:
    text: Int[Tensor, "batch pos"]  # held-out corpus windows (loss, ICL score)
    repeated: Int[Tensor, "batch pos"]  # BOS + random segment + the same segment (head scores)
    repeat_mask: Tensor | None = None  # repeated_bigram_mask(text), computed once

    def __post_init__(self) -> None:
        if self.repeat_mask is None:
            self.repeat_mask = repeated_bigram_mask(self.text)


def probe_segment(n_ctx: int) -> int:
    """Segment length of the repeated-token probe for head scores: up to 50 tokens, so that BOS
    and two copies fit the context."""
    return min(50, (n_ctx - 1) // 2)


def make_eval_data(model: Model, heldout_text: Tensor, n_repeated: int = 16, seed: int = 0) -> EvalData:
    from interp.data.synthetic import repeated_tokens

    seg = probe_segment(model.info.n_ctx)
    return EvalData(heldout_text, repeated_tokens(model, n_repeated, seg, seed=seed).cpu())


@torch.no_grad()
def evaluate(model: Model, forward, data: EvalData, batch_size: int = 64) -> dict[str, float | list[int]]:
    """eval_loss, icl_score (with its standard error and the single-token version),
    repeat_bigram_gap, and the best induction / previous-token head with their scores.
    `forward` maps tokens to logits (the trainer's fast forward, or the model itself)."""
    from interp.heads import head_scores, top_heads

    device = model.device
    losses = torch.cat([per_token_loss(forward(chunk.to(device)), chunk.to(device)).cpu()
                        for chunk in data.text.split(batch_size)])
    scores = head_scores(model, data.repeated.to(device), kinds=("induction", "previous-token"))
    icl, icl_se = icl_score(losses, data.text.shape[1])
    out: dict[str, float | list[int]] = {
        "eval_loss": float(losses.mean()),
        "icl_score": icl,
        "icl_score_se": icl_se,
        "icl_token_score": icl_token_score(losses, data.text.shape[1]),
        "repeat_bigram_gap": repeat_bigram_gap(losses, data.repeat_mask),
    }
    for kind, key in (("induction", "induction"), ("previous-token", "prev_token")):
        layer, head, score = top_heads(scores[kind], 1)[0]
        out[f"{key}_score"] = score
        out[f"{key}_head"] = [layer, head]
    return out


def read_metrics(path: str | Path) -> list[dict]:
    """The records of a metrics.jsonl (a run folder or the file itself); a torn last line is skipped."""
    path = Path(path)
    if path.is_dir():
        path = path / "metrics.jsonl"
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records
