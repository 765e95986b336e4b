"""Which head is a checkpoint's best induction head, scored on repeated random tokens with the
segment length the trainer's evaluations use (`interp.train.metrics.probe_segment`)."""

from __future__ import annotations

from interp.models import Model


def best_induction_head(model: Model, n_seqs: int = 8, seed: int = 0) -> tuple[int, int, float]:
    """(layer, head, score) of the model's highest-scoring induction head over `n_seqs` sequences
    of BOS + a random segment + the same segment again."""
    from interp.data.synthetic import repeated_tokens
    from interp.heads import head_scores, top_heads
    from interp.train.metrics import probe_segment

    tokens = repeated_tokens(model, n_seqs, probe_segment(model.info.n_ctx), seed=seed)
    scores = head_scores(model, tokens, kinds=("induction",))["induction"]
    return top_heads(scores, 1)[0]
