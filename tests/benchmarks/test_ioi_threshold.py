"""The threshold study's rule: per threshold, the worst seed and the largest circuit decide."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import ioi_threshold as study  # noqa: E402


def _rows(table: dict[float, list[tuple[int, float]]]) -> list[dict]:
    return [{"threshold": t, "seed": s, "heads": h, "faithfulness": f}
            for t, runs in table.items() for s, (h, f) in enumerate(runs)]  # fmt: skip


def test_the_largest_threshold_whose_worst_seed_reaches_the_goal():
    rows = _rows({0.05: [(40, 0.95), (38, 0.90)], 0.2: [(10, 0.99), (9, 0.79)], 0.3: [(8, 0.85), (7, 0.81)]})
    summary = {t["threshold"]: t for t in study.by_threshold(rows)}
    assert summary[0.2]["worst"] == 0.79 and summary[0.05]["heads"] == 40 and summary[0.3]["values"] == [0.85, 0.81]
    assert study.choose(rows, goal=0.8, max_heads=54)["threshold"] == 0.3  # 0.2 fails in one seed
    assert study.choose(rows, goal=0.9, max_heads=54)["threshold"] == 0.05
    # 0.05 has a seed over a budget of 39 heads; nothing else reaches 0.9: the highest worst seed, 0.3
    assert study.choose(rows, goal=0.9, max_heads=39)["threshold"] == 0.3


def test_when_no_threshold_reaches_the_goal_the_best_worst_seed_wins():
    rows = _rows({0.05: [(40, 0.70), (38, 0.75)], 0.1: [(20, 0.72), (18, 0.78)]})
    assert study.choose(rows, goal=0.8, max_heads=54)["threshold"] == 0.1
