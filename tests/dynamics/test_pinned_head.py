"""One head pinned across checkpoints: its own scores at every step while the best head changes,
the heads a user may type, the scores and patterns read off a checkpoint (the planted induction
model), the phase-change window's rule in words, and the figures that draw them."""

from __future__ import annotations

import numpy as np
import pytest

from interp import WorkbenchError
from interp.dynamics import best_head, checkpoint_heads, describe_window, parse_head, pinned_rows
from interp.dynamics.pinned import spread
from interp.viz.train import pinned_head_figure, probe_grid, training_curves


def _grid(**heads) -> dict[str, np.ndarray]:
    """Scores of a 2-layer, 4-head model: 0.01 everywhere but the named heads (L1H3=0.4, ...)."""
    induction = np.full((2, 4), 0.01)
    for name, value in heads.items():
        induction[int(name[1]), int(name[3])] = value
    return {"induction": induction, "previous-token": induction[::-1].copy() + 0.1}


# steps 400 -> 800: the best induction head changes from L1H3 to L1H2, as in the 2-layer run
CHECKPOINTS = [(800, _grid(L1H3=0.35, L1H2=0.50)), (200, _grid(L1H3=0.10)), (400, _grid(L1H3=0.40, L1H2=0.20)),
               (1600, _grid(L1H3=0.30, L1H2=0.60))]  # fmt: skip


def test_a_pinned_head_keeps_its_own_scores_while_the_best_head_changes():
    rows = pinned_rows(CHECKPOINTS, (1, 3))
    assert [r["step"] for r in rows] == [200, 400, 800, 1600]  # oldest first, whatever the input order
    assert [r["induction"] for r in rows] == pytest.approx([0.10, 0.40, 0.35, 0.30])
    assert [r["best induction head"] for r in rows] == ["L1H3", "L1H3", "L1H2", "L1H2"]
    assert [r["best induction score"] for r in rows] == pytest.approx([0.10, 0.40, 0.50, 0.60])
    assert [r["induction rank"] for r in rows] == [1, 1, 2, 2]
    # the previous-token score is the same head's (layer 1 of the flipped grid is layer 0's + 0.1)
    assert [r["previous-token"] for r in rows] == pytest.approx([0.11] * 4)
    other = pinned_rows(CHECKPOINTS, (1, 2))
    assert [r["induction"] for r in other] == pytest.approx([0.01, 0.20, 0.50, 0.60])


def test_a_head_the_model_lacks_is_one_line_naming_the_heads_it_has():
    with pytest.raises(WorkbenchError, match=r"head L2H0 is out of range: .* 2 layers × 4 heads; pick L0-1 and H0-3"):
        pinned_rows(CHECKPOINTS, (2, 0))
    with pytest.raises(WorkbenchError, match="out of range"):
        parse_head("L0H4", 2, 4)


@pytest.mark.parametrize("text", ["L1H3", "l1h3", "1.3", "1,3", " 1 3 ", "L1 H3", "1:3"])
def test_heads_are_typed_in_several_forms(text):
    assert parse_head(text, 2, 4) == (1, 3)


@pytest.mark.parametrize("text", ["13", "L1", "head 1", "", "L-1H2"])
def test_other_text_names_the_forms(text):
    with pytest.raises(WorkbenchError, match=r"type layer and head as L1H3, 1\.3 or 1,3"):
        parse_head(text, 2, 4)


def test_spread_keeps_the_ends_and_at_most_n():
    assert spread([30, 10, 20], 5) == [10, 20, 30]
    picked = spread(list(range(0, 1000, 10)), 16)
    assert len(picked) == 16 and picked[0] == 0 and picked[-1] == 990 and picked == sorted(set(picked))
    assert spread([1, 2, 3], 1) == [3]


def test_checkpoint_heads_on_the_planted_model():
    from interp.circuits.planted import build_planted

    model = build_planted()  # a0.h0 previous-token head, a1.h0 induction head (a1.h2 an induction decoy)
    got = checkpoint_heads(model, seg_len=6)
    assert got.shape == (2, 4)
    assert got.scores["induction"][1, 0] > 0.9 and got.scores["previous-token"][0, 0] > 0.9
    assert got.scores["induction"][0, 1] < 0.1 and got.scores["previous-token"][1, 3] < 0.1
    # the trainer's own probe and tie-break (a1.h0 and the decoy a1.h2 tie): the log's head and score
    from interp.data.synthetic import repeated_tokens
    from interp.train.metrics import evaluate, make_eval_data

    logged = evaluate(model, model, make_eval_data(model, repeated_tokens(model, 2, 15).cpu()))
    assert best_head(got.scores["induction"]) == (*logged["induction_head"], pytest.approx(logged["induction_score"]))
    assert best_head(got.scores["previous-token"])[:2] == tuple(logged["prev_token_head"])
    assert got.patterns.shape == (2, 4, 13, 13) and len(got.labels) == 13
    assert got.labels[0] == "<bos>" and got.labels[1:7] == got.labels[7:]  # BOS + segment + segment
    induction = got.patterns[1, 0]
    for dest in range(7, 13):  # second copy: attends to the token after the first occurrence
        assert int(induction[dest].argmax()) == dest - 6 + 1
    assert all(int(got.patterns[0, 0][dest].argmax()) == dest - 1 for dest in range(1, 13))


def test_the_window_caption_states_the_rule_or_why_there_is_none():
    jump = [{"step": s, "induction_score": 0.01 if s < 400 else 0.45} for s in range(0, 1000, 100)]
    text = describe_window(jump, "a2")
    assert text.startswith("Shaded: steps 400-400, a2's induction phase change")
    assert "10%" in text and "90%" in text and "0.2" in text
    flat = [{"step": s, "induction_score": 0.01} for s in range(0, 1000, 100)]
    assert describe_window(flat, "a1").startswith("No phase change shaded: a1's best induction score peaks at 0.010")
    assert "no induction_score evaluations" in describe_window([{"step": 1, "loss": 3.0}], "new")


def test_single_run_curves_shade_the_window_in_every_panel():
    records = [{"step": s, "loss": 3.0, "induction_score": 0.01 if s < 400 else 0.45} for s in range(0, 1000, 100)]
    shaded = training_curves(records, "a2", window=(300, 400))
    assert len(shaded.layout.shapes) == 5
    assert {(s.x0, s.x1) for s in shaded.layout.shapes} == {(300, 400)}
    assert {s.xref for s in shaded.layout.shapes} == {"x", "x2", "x3", "x4", "x5"}
    assert not training_curves(records, "a2").layout.shapes


def test_pinned_figures_draw_the_head_and_the_best_one():
    rows = pinned_rows(CHECKPOINTS, (1, 3))
    fig = pinned_head_figure(rows, "L1H3", window=(400, 800))
    names = [t.name for t in fig.data]
    assert names == ["L1H3 induction", "L1H3 previous-token", "best induction head"]
    assert list(fig.data[0].y) == pytest.approx([0.10, 0.40, 0.35, 0.30])
    assert list(fig.data[2].customdata) == ["L1H3", "L1H3", "L1H2", "L1H2"]
    assert [(s.x0, s.x1) for s in fig.layout.shapes] == [(400, 800)]
    grid = probe_grid([(10, np.eye(3)), (20, np.ones((3, 3)) / 3)], ["<bos>", "␣a", "<0xE2>"], "L1H3")
    assert [a.text for a in grid.layout.annotations] == ["step 10", "step 20"]
    assert grid.data[0].customdata[2][1].tolist() == ["2: <0xE2>", "1: ␣a"]
