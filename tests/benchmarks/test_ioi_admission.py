"""The admission study's candidates and rule: fewest heads among those reaching the goal in every seed,
else the highest mean worst template; candidates name a rule and, optionally, a discovery sample."""

from __future__ import annotations

import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import ioi_admission as study  # noqa: E402


def _rows(table: dict[str, list[tuple[int, float]]]) -> list[dict]:
    return [{"candidate": c, "seed": s, "heads": h, "worst": w} for c, runs in table.items() for s, (h, w) in enumerate(runs)]


def test_candidates_name_a_rule_and_a_sample():
    rel, ab = study.config("rel:0.05@48"), study.config("abs:0.01")
    assert (rel.threshold, rel.floor) == (0.05, 0.005) and (ab.threshold, ab.floor) == (None, 0.01)
    assert study.n_of("rel:0.05@48", 24) == 48 and study.n_of("abs:0.01", 24) == 24


def test_the_fewest_heads_reaching_the_goal_in_every_seed_win():
    rows = _rows({"rel:0.05": [(40, 0.85), (38, 0.81)], "abs:0.01": [(30, 0.9), (31, 0.82)], "abs:0.02": [(10, 0.95), (9, 0.7)]})
    got = study.choose(rows, goal=0.8, max_heads=54)
    assert got["candidate"] == "abs:0.01" and got["heads"] == 31  # abs:0.02 fails one seed
    assert study.choose(rows, goal=0.8, max_heads=30)["candidate"] == "abs:0.02"  # the only one within 30 heads


def test_when_none_reaches_the_goal_the_highest_mean_wins_and_nan_counts_as_worst():
    rows = _rows({"rel:0.05": [(40, 0.70), (38, 0.75)], "rel:0.05@48": [(30, 0.78), (31, math.nan)]})
    got = study.choose(rows, goal=0.8, max_heads=54)
    assert got["candidate"] == "rel:0.05" and got["by"].startswith("highest mean")
    assert study.choose(rows, goal=0.8, max_heads=20)["candidate"] is None


def test_w_reads_only_the_templates_the_model_does():
    rows = [{"faithfulness": 0.6, "model": 0.5}, {"faithfulness": 0.9, "model": 3.0}, {"faithfulness": 0.8, "model": 1.0}]
    assert study.worst_template(rows) == 0.8  # the first template's model fails the task: not read
    assert math.isnan(study.worst_template(rows[:1]))
