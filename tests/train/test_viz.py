"""Training figures."""

from __future__ import annotations

import plotly.graph_objects as go
import pytest

from interp.viz.train import phase_change, training_curves

RECORDS = [
    {"step": 0, "eval_loss": 5.0, "icl_score": 0.1, "icl_score_se": 0.02, "repeat_bigram_gap": -0.5,
     "induction_score": 0.01, "prev_token_score": 0.05},
    {"step": 10, "loss": 4.0},
    {"step": 20, "loss": 3.5, "eval_loss": 3.4, "icl_score": -0.5, "icl_score_se": 0.03, "repeat_bigram_gap": -1.5,
     "induction_score": 0.30, "prev_token_score": 0.6},
]


def test_training_curves_have_every_series():
    fig = training_curves(RECORDS)
    assert isinstance(fig, go.Figure)
    names = [t.name for t in fig.data]
    assert names == ["train", "held-out", "icl_score +-1 se", "icl_score", "repeat_bigram_gap", "induction_score",
                     "prev_token_score"]
    assert list(fig.data[0].x) == [10, 20] and list(fig.data[1].x) == [0, 20]
    band = fig.data[2]  # +-1 se: upper edge forward, lower edge back
    assert list(band.y) == pytest.approx([0.12, -0.47, -0.53, 0.08])


def test_training_curves_accept_logs_without_the_newer_metrics():
    old = [{k: v for k, v in r.items() if k not in ("icl_score_se", "repeat_bigram_gap")} for r in RECORDS]
    fig = training_curves(old)
    assert [t.name for t in fig.data if len(t.x)] == ["train", "held-out", "icl_score", "induction_score",
                                                       "prev_token_score"]


def test_phase_change_figure_overlays_runs_and_shades_the_window():
    fig = phase_change({"1l": RECORDS, "2l": RECORDS}, window=(10, 20))
    assert len(fig.data) == 6 and len(fig.layout.shapes) == 3


def test_phase_change_draws_every_seed_in_its_runs_colour():
    fig = phase_change({"1l": [RECORDS, RECORDS, RECORDS], "2l": RECORDS})
    assert len(fig.data) == 4 * 3
    one = [t for t in fig.data if t.name == "1l"]
    assert len(one) == 9 and len({t.line.color for t in one}) == 1
    assert sum(bool(t.showlegend) for t in fig.data) == 2  # one legend entry per run
