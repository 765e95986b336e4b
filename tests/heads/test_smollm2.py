"""SmolLM2-135M: induction and previous-token heads are found (per query head, 30 x 9) with the
prefix-matching score, and ablating the top induction heads raises the repeated-half loss far
more than ablating as many random heads from the same layers, interval against interval. Small
on purpose: 8 sequences of BOS + 2 x 20 tokens."""

from __future__ import annotations

import pytest

from interp.data.synthetic import repeated_tokens
from interp.heads import head_scores, top_heads
from interp.heads.copying import copying_scores, ov_copying
from interp.heads.validate import group_effects, layer_matched_heads

pytestmark = pytest.mark.slow


def test_smollm2_heads_and_their_ablation(smollm2):
    tokens = repeated_tokens(smollm2, 8, 20)
    scores = head_scores(smollm2, tokens)
    assert scores["induction"].shape == (30, 9)  # one score per query head (9 query / 3 KV heads)
    prev = top_heads(scores["previous-token"], 4)
    induction = top_heads(scores["induction"], 4)
    assert min(s for *_, s in prev) > 0.5  # attention mostly on i-1
    # prefix matching: most of the repeated half's attention on the token after the earlier copy,
    # and only in layers with earlier layers to feed them
    assert induction[0][2] > 0.5 and all(layer > 2 for layer, _, _ in induction)
    top = [(layer, head) for layer, head, _ in induction]
    controls = [layer_matched_heads(top, 9, seed=s) for s in range(3)]
    effects = group_effects(smollm2, tokens, [top] + controls, "mean")
    assert effects[0].interval.lo > 1.0, effects[0].interval  # nats
    assert effects[0].interval.lo > 3 * max(e.interval.hi for e in effects[1:]), [e.interval for e in effects]
    # at least one of them copies through the direct path (the others feed later layers)
    assert max(copying_scores(smollm2, tokens[:4], top)) > 0.5
    ov = ov_copying(smollm2, top, n_tokens=512)
    assert all(-1.0 <= o.score <= 1.0 and o.n_tokens == 512 for o in ov)
