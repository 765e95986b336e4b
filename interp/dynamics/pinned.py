"""One head followed across a run's checkpoints. The log's induction score is the best head's at
each evaluation, and the best head can change (L1H3, then L1H2 from step 800 in a 2-layer run), so
that curve follows different heads; pinning a head scores that same head at every checkpoint.

`checkpoint_heads(model)` reads one checkpoint: every head's induction and previous-token score on
the very probe the trainer's evaluations score heads on (so its best head and score are the log's
at that step), and every head's pattern on a short repeated sequence with readable token labels. `pinned_rows` lines the checkpoints up for
one head; `parse_head` reads what a user types to name it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from interp.errors import WorkbenchError
from interp.models import Model
from interp.types import Head

KINDS = ("induction", "previous-token")
N_PROBE = 16  # sequences scored, as the trainer's evaluations (interp.train.metrics.make_eval_data's n_repeated)
PROBE_SEGMENT = 12  # tokens per copy in the drawn probe (BOS + 12 + the same 12): readable axes
HEAD_FORMS = "L1H3, 1.3 or 1,3"
_HEAD = re.compile(r"\s*[Ll]?\s*(\d+)\s*(?:[Hh.,:/ ]|\s)\s*[Hh]?\s*(\d+)\s*")


@dataclass(frozen=True)
class CheckpointHeads:
    """Every head of one checkpoint: scores on the evaluations' probe, patterns on a short one."""

    scores: dict[str, np.ndarray]  # kind (KINDS) -> [layer, head] score
    patterns: np.ndarray  # [layer, head, dest, src] on the drawn probe
    labels: list[str]  # the drawn probe's tokens, readable (interp.train.tokens.readable_tokens)

    @property
    def shape(self) -> tuple[int, int]:
        return self.scores[KINDS[0]].shape  # (n_layers, n_heads)


def checkpoint_heads(model: Model, n_seqs: int = N_PROBE, seg_len: int = PROBE_SEGMENT, seed: int = 0) -> CheckpointHeads:
    """Scores of every head on `n_seqs` sequences of BOS + a random segment of the trainer's probe
    length + the same segment (seed `seed`; the defaults give the trainer's own probe), and patterns
    of every head on one such sequence with a segment of `seg_len`."""
    import torch

    from interp.data.synthetic import repeated_tokens
    from interp.heads import head_scores
    from interp.hooks import capture, names
    from interp.train.metrics import probe_segment
    from interp.train.tokens import readable_tokens

    with torch.no_grad():
        tokens = repeated_tokens(model, n_seqs, probe_segment(model.info.n_ctx), seed=seed)
        scores = head_scores(model, tokens, kinds=KINDS)
        drawn = repeated_tokens(model, 1, max(1, min(seg_len, (model.info.n_ctx - 1) // 2)), seed=seed)
        hooks = names("pattern", range(model.info.n_layers))
        got = capture(model, drawn, hooks)
    patterns = np.stack([got[h][0].float().cpu().numpy() for h in hooks])
    return CheckpointHeads({k: scores[k].float().cpu().numpy() for k in KINDS}, patterns,
                           readable_tokens(model.tokenizer, drawn[0].cpu()))


def head_name(head: Head) -> str:
    return f"L{head[0]}H{head[1]}"


def check_head(head: Head, n_layers: int, n_heads: int) -> Head:
    """`head` if the model has it, else a one-line WorkbenchError naming the heads it has."""
    layer, h = head
    if not (0 <= layer < n_layers and 0 <= h < n_heads):
        raise WorkbenchError(f"head {head_name(head)} is out of range: this run's model has {n_layers} layers × "
                             f"{n_heads} heads; pick L0-{n_layers - 1} and H0-{n_heads - 1}")  # fmt: skip
    return int(layer), int(h)


def parse_head(text: str, n_layers: int, n_heads: int) -> Head:
    """A head typed as L1H3, 1.3 or 1,3 (case and spaces free), checked against the model's shape."""
    m = _HEAD.fullmatch(text or "")
    if m is None:
        raise WorkbenchError(f"bad head {text!r}: type layer and head as {HEAD_FORMS}")
    return check_head((int(m.group(1)), int(m.group(2))), n_layers, n_heads)


def best_head(scores: np.ndarray) -> tuple[int, int, float]:
    """(layer, head, score) of the highest score in a [layer, head] grid, ties broken as the
    trainer's evaluations break them (`interp.heads.top_heads`), so it names the log's head."""
    import torch

    from interp.heads import top_heads

    return top_heads(torch.as_tensor(np.asarray(scores, dtype=np.float32)), 1)[0]


def pinned_rows(checkpoints: list[tuple[int, dict[str, np.ndarray]]], head: Head) -> list[dict]:
    """One row per (step, scores) checkpoint, oldest first, for the pinned `head`: its induction and
    previous-token scores, its rank among the induction heads (1 = best), and which head is the
    best induction head there with its score (what the log's induction score follows)."""
    rows = []
    for step, scores in sorted(checkpoints, key=lambda c: c[0]):
        grid = scores["induction"]
        layer, h = check_head(head, *grid.shape)
        best = best_head(grid)
        rows.append({
            "step": int(step),
            "induction": float(grid[layer, h]),
            "previous-token": float(scores["previous-token"][layer, h]),
            "induction rank": int((grid > grid[layer, h]).sum()) + 1,
            "best induction head": head_name(best[:2]),
            "best induction score": best[2],
        })
    return rows


def spread(steps: list[int], at_most: int) -> list[int]:
    """At most `at_most` of `steps` (sorted), evenly spread, the first and last always kept."""
    steps = sorted(steps)
    if len(steps) <= at_most:
        return steps
    if at_most < 2:
        return steps[-1:]
    picks = {round(i * (len(steps) - 1) / (at_most - 1)) for i in range(at_most)}
    return [steps[i] for i in sorted(picks)]
