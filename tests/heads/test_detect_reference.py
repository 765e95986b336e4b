"""The detector on a real (tiny) model against the slow reference on the same patterns, in
float32 and bfloat16, over several batches; and its device-following parts."""

from __future__ import annotations

import pytest
import torch

from interp import hooks
from interp.data.synthetic import repeated_tokens
from interp.heads.detect import KINDS, head_scores, to_host
from interp.heads.patterns import expected_patterns
from interp.heads.scores import Scorer, reference_scores


@pytest.fixture(scope="module")
def tiny_llama_bf16(tiny_llama_dir):
    from interp import load

    return load(str(tiny_llama_dir), device="cpu", dtype="bfloat16")


@pytest.mark.parametrize("measure", ["target", "tl-mul", "tl-abs"])
@pytest.mark.parametrize("low", [False, True])
def test_head_scores_equal_the_reference_on_the_models_patterns(measure, low, tiny_llama, tiny_llama_bf16):
    model = tiny_llama_bf16 if low else tiny_llama
    tokens = repeated_tokens(model, 5, 8, seed=1)
    got = head_scores(model, tokens, KINDS, measure=measure, batch_size=2)  # batches of 2, 2, 1 pooled
    L = model.info.n_layers
    patterns = [hooks.capture(model, chunk, hooks.names("pattern", range(L))) for chunk in tokens.split(2)]
    expected = expected_patterns(tokens, KINDS)
    for layer in range(L):
        pattern = torch.cat([p[hooks.name("pattern", layer)] for p in patterns])
        assert pattern.dtype == model.dtype
        for k, kind in enumerate(KINDS):
            ref = reference_scores(pattern, expected[:, k], measure=measure).float()
            torch.testing.assert_close(got[kind][layer], ref, atol=1e-5, rtol=0)
    assert max(float(s.abs().max()) for s in got.values()) > 0.01  # not vacuous


def test_scorer_follows_the_patterns_device():
    """Expected patterns built on one device are copied to the pattern's (here 'meta', a
    stand-in for a second device: shapes and placement only), once per device."""
    tokens = torch.tensor([[0, 1, 2, 1, 2]])
    for measure in ("target", "tl-mul"):
        scorer = Scorer(expected_patterns(tokens, KINDS), measure)
        num, den = scorer(torch.rand(1, 4, 5, 5, device="meta"))
        assert num.device.type == den.device.type == "meta" and num.shape == (1, 3, 4)
        assert {d.type for d in scorer._parts} == {"cpu", "meta"}
        scorer(torch.rand(1, 4, 5, 5, device="meta"))
        assert len(scorer._parts) == 2  # copied once


def test_to_host_stacks_layers_in_order():
    per_layer = {2: torch.full((3,), 2.0), 0: torch.zeros(3), 1: torch.ones(3)}
    assert to_host(per_layer, 3)[:, 0].tolist() == [0.0, 1.0, 2.0]
