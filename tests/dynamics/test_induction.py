"""The best induction head at a checkpoint: the planted induction head of a hand-built model,
and the same pick as the head scores on the documented probe."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from interp.data.synthetic import repeated_tokens
from interp.dynamics import best_induction_head
from interp.heads import head_scores


def _build_planted():
    """tests/heads/conftest.py's model with a planted previous-token head L0H0 and induction head L1H0."""
    path = Path(__file__).resolve().parents[1] / "heads" / "conftest.py"
    spec = importlib.util.spec_from_file_location("planted_heads", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.build_planted()


def test_best_induction_head_finds_the_planted_one():
    layer, head, score = best_induction_head(_build_planted())
    assert (layer, head) == (1, 0)
    assert score > 0.45  # every second-half row attends to the token after the earlier copy


def test_best_induction_head_is_the_top_score_on_the_probe(tiny_llama):
    # probe: 8 sequences of BOS + 31 random tokens twice (n_ctx 64: the segment is (64 - 1) // 2)
    scores = head_scores(tiny_llama, repeated_tokens(tiny_llama, 8, 31, seed=0), kinds=("induction",))["induction"]
    layer, head, score = best_induction_head(tiny_llama)
    assert score == pytest.approx(float(scores.max()))
    assert float(scores[layer, head]) == pytest.approx(score)
    assert best_induction_head(tiny_llama, seed=1)[2] != pytest.approx(score, abs=1e-9)  # the seed is used
