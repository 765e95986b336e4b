"""SmolLM2-135M: induction and previous-token heads are found (per query head, 30 x 9), and
ablating the top induction heads raises the repeated-half loss far more than ablating as many
random heads. Small on purpose: 8 sequences of BOS + 2 x 20 tokens."""

from __future__ import annotations

import pytest

from interp.data.synthetic import repeated_tokens
from interp.heads import head_scores, top_heads
from interp.heads.copying import copying_scores
from interp.heads.validate import ablated_losses, clean_loss, random_heads

pytestmark = pytest.mark.slow


def test_smollm2_heads_and_their_ablation(smollm2):
    tokens = repeated_tokens(smollm2, 8, 20)
    scores = head_scores(smollm2, tokens)
    assert scores["induction"].shape == (30, 9)  # one score per query head (9 query / 3 KV heads)
    prev = top_heads(scores["previous-token"], 4)
    induction = top_heads(scores["induction"], 4)
    assert min(s for *_, s in prev) > 0.5  # attention mostly on i-1
    assert induction[0][2] > 0.3 and all(layer > 2 for layer, _, _ in induction)  # induction needs earlier layers
    top = [(layer, head) for layer, head, _ in induction]
    groups = [top] + [random_heads(30, 9, len(top), seed=s, exclude=top) for s in range(3)]
    base = clean_loss(smollm2, tokens)
    rise = ablated_losses(smollm2, tokens, groups, "mean") - base
    assert rise[0] > 1.0, rise  # nats
    assert rise[0] > 3 * rise[1:].max(), rise
    # at least one of them copies through the direct path (the others feed later layers)
    assert max(copying_scores(smollm2, tokens[:4], top)) > 0.5
