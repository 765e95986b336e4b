"""AppTests of the Attention view (issue 27): the token view carries the shown head's pattern, the log
colour scale (beside hide-BOS) with a colour bar that says so, and the thumbnails: labelled, the
shown head framed, and a click on one (the chart's selection, as the browser sends it) opens it."""

from __future__ import annotations

import json
import re

import numpy as np
from dashboard_helpers import errors, figures, open_app

PROMPT = "a b c a b c"
PAGE = "views/attention.py"


def _token_view(at) -> dict:
    """The data block of the page's token view (its iframe's document)."""
    (frame,) = at.get("iframe")
    doc = frame.proto.srcdoc
    block = re.search(r'<script type="application/json" id="token-view-data">(.*?)</script>', doc, re.DOTALL)
    return json.loads(block.group(1))


def _heatmaps(fig: dict) -> list[dict]:
    return [t for t in fig["data"] if t["type"] == "heatmap"]


def _click_thumbnail(at, head: int, layer: int):
    """Send the grid chart the selection a click on `head`'s thumbnail makes in the browser (its
    click target: x, y at the centre, customdata (layer, head)), then rerun as Streamlit does."""
    from streamlit.proto.WidgetStates_pb2 import WidgetState

    grid = at.get("plotly_chart")[1].proto
    target = next(t for t in figures(at)[1]["data"] if t["type"] == "scatter" and t["customdata"][0][1] == head)
    point = {"curve_number": len(_heatmaps(figures(at)[1])) + head, "point_number": 0, "point_index": 0,
             "x": target["x"][0], "y": target["y"][0], "customdata": [layer, head]}  # fmt: skip
    states = at._tree.get_widget_states()
    states.widgets.append(WidgetState(id=grid.id, string_value=json.dumps(
        {"selection": {"points": [point], "point_indices": [0], "box": [], "lasso": []}})))  # fmt: skip
    at._run(states)
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_token_view_log_scale_and_thumbnails(tiny_gpt2_dir, tiny_gpt2):
    at = open_app(str(tiny_gpt2_dir), PROMPT, page=PAGE)
    at.number_input(key="attn_layer").set_value(1).run()
    at.number_input(key="attn_head").set_value(3).run()
    assert not errors(at)
    single, grid = figures(at)
    z = np.array(single["data"][0]["z"], dtype=float)
    tokens = tiny_gpt2.to_str_tokens(tiny_gpt2.to_tokens(PROMPT)[0])
    assert z.shape == (len(tokens), len(tokens)) and single["data"][0]["colorbar"]["title"]["text"] == "weight"

    # the token view shows the same head: its pattern and the prompt's tokens
    data = _token_view(at)
    assert data["title"] == "L1H3" and data["tokens"] == tokens and data["log"] is False
    np.testing.assert_allclose(np.array(data["pattern"]), z, atol=1e-6)
    assert any("hover a token" in c.value for c in at.caption)

    # every head of the layer, labelled; the shown one framed, each with a click target
    heat = _heatmaps(grid)
    assert len(heat) == 4 and [t["customdata"] for t in grid["data"] if t["type"] == "scatter"] == [
        [[1, h]] for h in range(4)]  # fmt: skip
    assert [a["text"] for a in grid["layout"]["annotations"]] == ["L1H0", "L1H1", "L1H2", "<b>L1H3 ▲</b>"]
    assert grid["layout"]["shapes"][0]["xref"] == f"{heat[3].get('xaxis', 'x')} domain"
    np.testing.assert_allclose(np.array(heat[3]["z"], dtype=float), z, rtol=1e-5, atol=1e-7)

    # the log scale: log10 weights from 1e-4, said on the colour bar, in the grid and the token view too
    at.toggle(key="attn_log").set_value(True).run()
    assert not errors(at)
    single, grid = figures(at)
    np.testing.assert_allclose(np.array(single["data"][0]["z"], dtype=float), np.log10(np.clip(z, 1e-4, None)), atol=1e-5)
    assert single["data"][0]["colorbar"]["title"]["text"] == "weight<br>(log scale)"
    assert single["data"][0]["colorbar"]["ticktext"] == ["0.0001", "0.001", "0.01", "0.1", "1"]
    assert _heatmaps(grid)[0]["colorbar"]["title"]["text"] == "weight<br>(log scale)"
    assert _token_view(at)["log"] is True

    # with the first token hidden too: the renormalised weights, on the log scale, named so
    at.toggle(key="attn_hide_bos").set_value(True).run()
    single, _ = figures(at)
    rest = z[1:, 1:] / z[1:, 1:].sum(-1, keepdims=True)
    np.testing.assert_allclose(np.array(single["data"][0]["z"], dtype=float), np.log10(np.clip(rest, 1e-4, None)), atol=1e-4)
    assert single["data"][0]["colorbar"]["title"]["text"] == "weight, renormalised<br>(log scale)"
    assert _token_view(at)["tokens"] == tokens[1:]


def test_clicking_a_thumbnail_opens_that_head(tiny_gpt2_dir):
    at = open_app(str(tiny_gpt2_dir), PROMPT, page=PAGE)
    at.number_input(key="attn_layer").set_value(1).run()
    before = figures(at)[0]["data"][0]["z"]
    assert figures(at)[0]["layout"]["title"]["text"] == "L1H0"

    _click_thumbnail(at, head=2, layer=1)
    assert not errors(at)
    single, grid = figures(at)
    assert at.number_input(key="attn_head").value == 2 and at.number_input(key="attn_layer").value == 1
    assert single["layout"]["title"]["text"] == "L1H2" and _token_view(at)["title"] == "L1H2"
    assert not np.allclose(np.array(single["data"][0]["z"]), np.array(before))
    np.testing.assert_allclose(np.array(single["data"][0]["z"]), np.array(_heatmaps(grid)[2]["z"]), rtol=1e-5)
    assert [a["text"] for a in grid["layout"]["annotations"]][2] == "<b>L1H2 ▲</b>"

    # the pickers still rule afterwards: the click is applied once, not at every rerun
    at.number_input(key="attn_head").set_value(1).run()
    assert figures(at)[0]["layout"]["title"]["text"] == "L1H1" and not errors(at)
