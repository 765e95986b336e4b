"""Phase-change statistics over training logs: the jump window, the induction threshold, and each
metric's change across a window in every run."""

from __future__ import annotations

import pytest

from interp.dynamics import INDUCTION_FORMED, change_across, compare_across, induction_window, jump_window


def test_jump_window_finds_where_the_change_happens():
    steps = [0, 10, 20, 30, 40, 50]
    assert jump_window(steps, [0.0, 0.0, 0.05, 0.5, 0.95, 1.0]) == (30, 40)
    assert jump_window(steps, [0.0, -0.01, -0.02, -0.9, -1.0, -1.0]) == (30, 30)
    assert jump_window(steps, [1.0] * 6) is None


def _log(induction) -> list[dict]:
    """Eval records every 20 steps, with training-only records in between (no induction_score)."""
    out = []
    for s in range(0, 400, 20):
        out += [{"step": s, "eval_loss": 3.0, "induction_score": induction(s)}, {"step": s + 10, "loss": 3.0}]
    return out


def test_induction_window_needs_the_score_to_reach_the_threshold():
    formed = _log(lambda s: 0.01 if s < 200 else 0.45)
    assert induction_window(formed) == (200, 200)
    # the same shape of rise, but to a score no induction head would have: not a phase change
    weak = _log(lambda s: 0.01 if s < 200 else INDUCTION_FORMED - 0.01)
    assert jump_window([r["step"] for r in weak if "induction_score" in r],
                       [r["induction_score"] for r in weak if "induction_score" in r]) == (200, 200)
    assert induction_window(weak) is None
    assert induction_window(weak, min_score=0.1) == (200, 200)  # the threshold is a parameter
    assert induction_window([{"step": 10, "loss": 3.0}]) is None  # a log without evaluations
    ramp = _log(lambda s: min(0.3, s / 1000))  # 10% of the rise (0.03) at step 40, 90% (0.27) at 280
    assert induction_window(ramp) == (40, 280)


def test_change_across_a_window_compares_the_spans_around_it():
    records = [{"step": s, "icl_score": (-0.1 if s < 700 else -0.2), "loss": 1.0} for s in range(0, 1200, 20)]
    records.insert(3, {"step": 50, "loss": 3.0})  # training records without the key are ignored
    before, after = change_across(records, "icl_score", (700, 760), span=200)
    assert before == pytest.approx(-0.1) and after == pytest.approx(-0.2)
    with pytest.raises(ValueError, match="before the window"):
        change_across(records, "icl_score", (0, 60), span=200)


def test_compare_across_uses_one_window_for_every_run():
    jump = [{"step": s, "eval_loss": 1.0, "icl_score": -0.1 if s < 700 else -0.2, "repeat_bigram_gap": -1.0}
            for s in range(0, 1500, 20)]
    flat = [{"step": s, "eval_loss": 1.0, "icl_score": -0.1} for s in range(0, 1500, 20)]  # an older log: no gap
    rows = compare_across({"2l": jump, "1l": flat}, (680, 760))
    assert [r["run"] for r in rows] == ["2l", "1l"] and rows[0]["span"] == 100  # max(100, 80, 5 x 20)
    assert rows[0]["icl_score change"] == pytest.approx(-0.1) and rows[1]["icl_score change"] == pytest.approx(0.0)
    assert rows[0]["repeat_bigram_gap change"] == pytest.approx(0.0) and rows[1]["repeat_bigram_gap change"] is None
    assert compare_across({"2l": jump}, (680, 760), span=300)[0]["span"] == 300
