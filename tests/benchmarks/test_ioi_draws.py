"""The fresh-draws study's seed ranges and its summary over draws (how many reach the goal)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import ioi_draws as study  # noqa: E402


def test_seed_ranges_and_lists():
    assert study.seeds_of("10-13") == [10, 11, 12, 13]
    assert study.seeds_of("3,7-8,20") == [3, 7, 8, 20]


def test_summary_counts_draws_reaching_the_goal_by_value_and_by_lower_end():
    rows = [{"heads": h, "faithfulness": {"value": v, "lo": lo, "hi": v + 0.1}}
            for h, v, lo in [(30, 0.85, 0.81), (28, 0.82, 0.72), (33, 0.70, 0.60)]]  # fmt: skip
    s = study.summarize(rows, goal=0.8)
    assert s["draws"] == 3 and s["reach_goal"] == 2 and s["lower_end_reaches_goal"] == 1
    assert s["mean"] == pytest.approx((0.85 + 0.82 + 0.70) / 3) and (s["min"], s["max"]) == (0.70, 0.85)
    assert (s["heads_min"], s["heads_max"]) == (28, 33)
