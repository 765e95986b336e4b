"""AppTest of the Circuit view's choices from issue 29 on a tiny model: MIB's ungrouped graph, scoring
draws (the pooled interval), MIB's Random row beside the curve and in the tiles, for a circuit found
here, opened from its save in a fresh session, and read from an edges.json written before any of them."""

from __future__ import annotations

import json

from dashboard_helpers import errors, figures, open_app

SETTINGS = {"circ_prompts": 3, "circ_steps": 2, "circ_exact": 0, "circ_graph_kind": "mib", "circ_draws": 2}


def _tiles(at) -> dict:
    return {m.label: m.value for m in at.metric}


def _captions(at) -> str:
    return "\n".join(c.value for c in at.caption)


def test_mib_graph_with_scoring_draws_found_saved_and_opened(tiny_llama_dir, runs_folder):
    at = open_app(str(tiny_llama_dir), page="views/circuit.py", **SETTINGS)
    at.button(key="circ_run").click().run()
    assert not errors(at), errors(at)
    tiles = _tiles(at)
    n_edges = int(tiles["Edges in the graph (mib)"].replace(",", ""))
    assert n_edges > 82  # MIB's graph: q, k and v per query head (ours has 82 on this 4q/2kv model)
    graph, curve = figures(at)[:2]
    words = f"(mib graph, {n_edges:,} edges)"
    assert words[1:-1] in graph["layout"]["title"]["text"] and words in curve["layout"]["title"]["text"]
    assert any(t.get("name", "").startswith("random circuits, 3 draws") for t in curve["data"])
    assert "f at 5%, 2 scoring draws" in tiles and {"Random: f at 5%", "Random: CPR", "Random: CMD"} <= set(tiles)
    pooled = next(m for m in at.metric if m.label == "f at 5%, 2 scoring draws")
    assert pooled.value.count("[") == 1 and "scoring prompts resampled" in pooled.help
    assert "2 scoring draws and the held-out prompts together" in next(m for m in at.metric if m.label == "f at 5% of edges").help
    (folder,) = runs_folder.glob("circuit-*")
    data = json.loads((folder / "edges.json").read_text())
    assert data["graph"]["name"] == "mib" and data["graph"]["n_edges"] == n_edges
    assert data["pooled"]["n_draws"] == 2 and data["random"]["draws"] == 3
    settings = json.loads((folder / "run.json").read_text())["settings"]
    assert settings["graph"] == "mib" and settings["scoring_draws"] == 2

    fresh = open_app(str(tiny_llama_dir), page="views/circuit.py", **SETTINGS)  # opened from the save, not rerun
    assert not errors(fresh) and "Opened" in _captions(fresh)
    assert _tiles(fresh) == tiles and fresh.button(key="circ_run").label == "Find the circuit again"
    assert words in figures(fresh)[1]["layout"]["title"]["text"]
    # the side-by-side: S2 -> IO opened from that save, ABC found now, both on MIB's graph with their draws
    fresh.button(key="circ_both_run").click().run()
    assert not errors(fresh), errors(fresh)
    table = next(d.value for d in fresh.dataframe if "counterfactual" in d.value.columns)
    assert list(table["graph"]) == [f"mib ({n_edges:,} edges)"] * 2
    assert all("(2 draws)" in v for v in table["pooled over scoring draws"])
    assert "Both on the same held-out clean prompts," in _captions(fresh)
    assert len(list(runs_folder.glob("circuit-*"))) == 2  # the ABC circuit saved beside the other

    other = open_app(str(tiny_llama_dir), page="views/circuit.py")
    other.radio(key="circ_mode").set_value("open a saved run").run()
    other.selectbox(key="circ_saved").set_value(str(folder)).run()
    assert not errors(other) and _tiles(other) == tiles


def test_an_edges_file_from_before_the_graph_and_random_blocks_opens(tiny_llama_dir, tmp_path):
    """`interp circuit --out` before issue 29 wrote no graph, random or pooled block: our graph, no random row."""
    import torch

    from interp.circuits.io import circuit_json, write_edges
    from interp.circuits.types import Curve, EdgeScores, Graph

    g = Graph(n_layers=2, n_heads=4, n_kv=2, has_mlp=True)  # the tiny Llama's
    p = [0.1, 1.0, 5.0, 10.0, 100.0]
    f = [0.0, 0.1, 0.3, 0.5, 1.0]
    curve = Curve(p, [0, 1, 4, 8, 82], [0, 1, 3, 8, 82], f, [x - 0.1 for x in f], [x + 0.1 for x in f], 0.6, 0.4,
                  (0.5, 0.7), (0.3, 0.5), 1.5, -0.5, [-0.5 + 2 * x for x in f], "abs", True, "counterfactual", 4)  # fmt: skip
    s = EdgeScores(g, torch.linspace(-1, 1, g.n_edges), "eap-ig", "ioi", "logit-diff", 4, 1.5, -0.5, steps=2)
    write_edges(tmp_path, circuit_json(s, {"abs": curve, "signed": curve}, [], {"model": "tiny", "seed": 0}))
    at = open_app(str(tiny_llama_dir), page="views/circuit.py")
    at.radio(key="circ_mode").set_value("open a saved run").run()
    at.text_input(key="circ_path").input(str(tmp_path)).run()
    assert not errors(at), errors(at)
    tiles = _tiles(at)
    assert tiles["Edges in the graph (grouped)"] == "82" and tiles["f at 5% of edges"] == "0.30"
    assert not any(k.startswith("Random") or "scoring draws" in k for k in tiles)
    assert "No random row: this file was written before it was measured." in _captions(at)
    curve_fig = figures(at)[1]
    assert not any(t.get("name", "").startswith("random") for t in curve_fig["data"])
    assert "(grouped graph, 82 edges)" in curve_fig["layout"]["title"]["text"]
