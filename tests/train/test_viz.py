"""Training figures and the phase-change window finder."""

from __future__ import annotations

import plotly.graph_objects as go

from interp.train.metrics import jump_window
from interp.viz.train import phase_change, training_curves

RECORDS = [
    {"step": 0, "eval_loss": 5.0, "icl_score": 0.1, "induction_score": 0.01, "prev_token_score": 0.05},
    {"step": 10, "loss": 4.0},
    {"step": 20, "loss": 3.5, "eval_loss": 3.4, "icl_score": -0.5, "induction_score": 0.30, "prev_token_score": 0.6},
]


def test_training_curves_have_every_series():
    fig = training_curves(RECORDS)
    assert isinstance(fig, go.Figure)
    names = [t.name for t in fig.data]
    assert names == ["train", "held-out", "icl_score", "induction_score", "prev_token_score"]
    assert list(fig.data[0].x) == [10, 20] and list(fig.data[1].x) == [0, 20]


def test_phase_change_figure_overlays_runs_and_shades_the_window():
    fig = phase_change({"1l": RECORDS, "2l": RECORDS}, window=(10, 20))
    assert len(fig.data) == 4 and len(fig.layout.shapes) == 2


def test_jump_window_finds_where_the_change_happens():
    steps = [0, 10, 20, 30, 40, 50]
    assert jump_window(steps, [0.0, 0.0, 0.05, 0.5, 0.95, 1.0]) == (30, 40)
    assert jump_window(steps, [0.0, -0.01, -0.02, -0.9, -1.0, -1.0]) == (30, 30)
    assert jump_window(steps, [1.0] * 6) is None
