"""What is measured at each evaluation: held-out loss, the in-context-learning score and the best
induction / previous-token head scores (Olsson et al. 2022).

The in-context-learning (ICL) score is the loss at a late token minus the loss at an early
token of held-out text: Olsson et al. use tokens 500 and 50 of a 512-token context; we scale
both to the model's n_ctx. It goes negative when later tokens are predicted better because the
model uses its context -- induction heads are the main way small models do that.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

OLSSON_CONTEXT, OLSSON_EARLY, OLSSON_LATE = 512, 50, 500


def per_token_loss(logits: Float[Tensor, "batch pos vocab"], tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch pos_minus_1"]:
    """Cross-entropy of predicting token i+1 at position i."""
    return F.cross_entropy(logits[:, :-1].float().transpose(1, 2), tokens[:, 1:], reduction="none")


def icl_positions(n_ctx: int) -> tuple[int, int]:
    """(early, late) token indices: Olsson's 50 and 500 of 512, scaled to n_ctx."""
    early = max(1, round(OLSSON_EARLY * n_ctx / OLSSON_CONTEXT))
    late = min(n_ctx - 1, round(OLSSON_LATE * n_ctx / OLSSON_CONTEXT))
    return early, late


def icl_score(losses: Float[Tensor, "batch pos_minus_1"], n_ctx: int) -> float:
    """Mean loss on the late token minus mean loss on the early token (index = token predicted)."""
    early, late = icl_positions(n_ctx)
    return float(losses[:, late - 1].mean() - losses[:, early - 1].mean())


@dataclass
class EvalData:
    text: Int[Tensor, "batch pos"]  # held-out corpus windows (loss, ICL score)
    repeated: Int[Tensor, "batch pos"]  # BOS + random segment + the same segment (head scores)


def make_eval_data(bridge, heldout_text: Tensor, n_repeated: int = 16, seed: int = 0) -> EvalData:
    from interp.data.synthetic import repeated_tokens

    seg = min(50, (bridge.cfg.n_ctx - 1) // 2)
    return EvalData(heldout_text, repeated_tokens(bridge, n_repeated, seg, seed=seed).cpu())


@torch.no_grad()
def evaluate(bridge, forward, data: EvalData, batch_size: int = 16) -> dict[str, float | list[int]]:
    """eval_loss, icl_score, the best induction / previous-token head and their scores.
    `forward` maps tokens to logits (the trainer's fast forward, or the bridge itself)."""
    from interp.heads.detect import head_scores

    device = next(bridge.parameters()).device
    losses = torch.cat([per_token_loss(forward(chunk.to(device)), chunk.to(device)).cpu()
                        for chunk in data.text.split(batch_size)])
    scores = head_scores(bridge, data.repeated.to(device), kinds=("induction", "previous-token"))
    out: dict[str, float | list[int]] = {
        "eval_loss": float(losses.mean()),
        "icl_score": icl_score(losses, data.text.shape[1]),
    }
    for kind, key in (("induction", "induction"), ("previous-token", "prev_token")):
        s = scores[kind]
        best = int(s.flatten().argmax())
        out[f"{key}_score"] = float(s.flatten()[best])
        out[f"{key}_head"] = [best // s.shape[1], best % s.shape[1]]
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


def jump_window(steps: list[int], values: list[float], lo: float = 0.1, hi: float = 0.9) -> tuple[int, int] | None:
    """The steps where `values` first covers `lo` and then `hi` of its total change from the first
    value to its extreme (max if it rises, min if it falls): where a phase change happens.
    None when there is no change at all."""
    if len(values) < 2:
        return None
    start = values[0]
    end = max(values) if abs(max(values) - start) >= abs(min(values) - start) else min(values)
    total = end - start
    if total == 0:
        return None
    fractions = [(v - start) / total for v in values]
    first = next(s for s, f in zip(steps, fractions) if f >= lo)
    last = next(s for s, f in zip(steps, fractions) if f >= hi)
    return first, last
