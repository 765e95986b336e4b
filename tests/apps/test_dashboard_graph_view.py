"""AppTest of the Graph view on a tiny model with random transcoders: a saved graph.json opened from the
runs folder (scores, layout, a node's edges, pinning, a supernode with summed edges, re-pruning), a typed
bad path refused in one line, and a graph built for the sidebar's prompt, saved and found again."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from dashboard_helpers import errors, figures, open_app

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "graphs"))  # graph_helpers
from graph_helpers import random_transcoders  # noqa: E402

from interp.features import save  # noqa: E402
from interp.graphs import export, prune  # noqa: E402

PROMPT = "The cat sat on the mat and"
PAGE = "views/graph.py"


@pytest.fixture(scope="module")
def saved_graph(tiny_llama, tmp_path_factory):
    """A graph.json (with its whole adjacency) and the transcoders it was made with."""
    from interp.graphs.attribute import attribute

    root = tmp_path_factory.mktemp("graph_view")
    tc = random_transcoders(tiny_llama)
    save(tc, root / "tc")
    g = attribute(tiny_llama, tc, PROMPT, batch_size=16)
    p = prune.prune(g)
    export.write_graph(g, root / "g" / "graph.json", p, prune.scores(g))
    return root


def _nodes(fig) -> dict[str, tuple[float, float]]:
    return {n: (x, y) for t in fig["data"] if t.get("meta") == "nodes" for n, x, y in zip(t["customdata"], t["x"], t["y"])}


def _lines(fig) -> int:
    return sum(sum(v is None for v in t["x"]) for t in fig["data"] if t.get("meta") == "edges")


def test_open_a_saved_graph_and_explore_it(tiny_llama_dir, saved_graph, runs_folder):
    import shutil

    shutil.copytree(saved_graph / "g", runs_folder / "graph")
    data = json.loads((runs_folder / "graph" / "graph.json").read_text())
    at = open_app(str(tiny_llama_dir), PROMPT, page=PAGE)
    assert not errors(at), errors(at)
    assert at.selectbox(key="graph_saved").value.endswith("graph")  # the picker over the runs folder
    tiles = {m.label: m.value for m in at.metric}
    assert tiles["Replacement score"] == f"{data['scores']['replacement']:.3f}"
    assert tiles["Completeness"] == f"{data['scores']['completeness']:.3f}"
    (fig,) = figures(at)
    nodes = _nodes(fig)
    assert set(nodes) == {n["id"] for n in data["nodes"]} and _lines(fig) == len(data["edges"])
    assert nodes["tok@0"][1] == -1 and nodes["logit0"][1] == data["n_layers"]  # embeddings bottom, logits top
    assert "node threshold 0.8, edge threshold 0.98" in "\n".join(c.value for c in at.caption)

    # a node's edges, then pinned
    ids = {n["index"]: n["id"] for n in data["nodes"]}
    target = "logit0"
    into = [e for e in data["edges"] if ids[e["target"]] == target]
    at.selectbox(key="graph_node").set_value(target).run()
    table = at.dataframe[-1].value
    assert list(table["direction"]) == ["in"] * len(into)
    assert sorted(table["weight"]) == pytest.approx(sorted(e["weight"] for e in into))
    at.multiselect(key="graph_pin").set_value([target]).run()
    assert _lines(figures(at)[0]) == len(into)
    at.multiselect(key="graph_pin").set_value([]).run()
    feature = next(n for n in data["nodes"] if n["kind"] == "feature")
    at.selectbox(key="graph_node").set_value(feature["id"]).run()  # its top info, and the Features view one click away
    assert not errors(at) and "activation" in at.code[-1].value
    assert any(f"Feature {feature['layer']}:{feature['feature']}" in str(e.proto) for e in at.get("page_link"))

    # a supernode of two features: its edges are its members' summed
    feats = [n["id"] for n in data["nodes"] if n["kind"] == "feature"][:2]
    at.text_input(key="graph_group_name").input("pair").run()
    at.multiselect(key="graph_group_members").set_value(feats).run()
    at.button(key="graph_group_add").click().run()
    assert not errors(at), errors(at)
    fig = figures(at)[0]
    assert "pair" in _nodes(fig) and not set(feats) & set(_nodes(fig))
    at.selectbox(key="graph_node").set_value("pair").run()
    table = at.dataframe[-1].value
    to_logit = [w for f, t, w in zip(table["from"], table["to"], table["weight"]) if t == target]
    expect = sum(e["weight"] for e in into if ids[e["source"]] in feats)
    if to_logit:
        assert to_logit[0] == pytest.approx(expect)
    out = {t: w for d, t, w in zip(table["direction"], table["to"], table["weight"]) if d == "out"}
    assert out and set(table["how"]) >= {"sum of 2 edges"}
    for t, w in out.items():  # every outgoing edge is the sum of the members' edges to that node
        assert w == pytest.approx(sum(e["weight"] for e in data["edges"]
                                      if ids[e["source"]] in feats and ids[e["target"]] == t))  # fmt: skip

    # re-pruning the whole graph at a lower node threshold keeps fewer nodes
    at.slider(key=f"graph_node_t:{runs_folder / 'graph' / 'graph.json'}").set_value(0.5).run()
    assert not errors(at), errors(at)
    assert len(_nodes(figures(at)[0])) < len(nodes)


def test_a_bad_path_is_one_line(tiny_llama_dir, tmp_path):
    (tmp_path / "graph.json").write_text("{not json")
    at = open_app(str(tiny_llama_dir), PROMPT, page=PAGE, graph_path=str(tmp_path / "nowhere"))
    assert len(errors(at)) == 1 and "no saved result" in errors(at)[0]
    at.text_input(key="graph_path").input(str(tmp_path)).run()
    assert len(errors(at)) == 1 and "cannot be read" in errors(at)[0]


def test_build_for_the_prompt_saved_and_found_again(tiny_llama_dir, saved_graph, runs_folder):
    at = open_app(str(tiny_llama_dir), PROMPT, page=PAGE, graph_mode="build one for the prompt",
                  graph_tc=str(saved_graph / "tc"), graph_logits=3)  # fmt: skip
    assert at.button(key="graph_run").label == "Build the graph"
    at.button(key="graph_run").click().run()
    assert not errors(at), errors(at)
    (folder,) = runs_folder.glob("graph-*")
    assert {p.name for p in folder.iterdir()} == {"graph.json", "graph.html", "run.json"}
    data = json.loads((folder / "graph.json").read_text())
    assert data["prompt"] == PROMPT and sum(n["kind"] == "logit" for n in data["nodes"]) <= 3
    assert set(_nodes(figures(at)[0])) == {n["id"] for n in data["nodes"]}
    fresh = open_app(str(tiny_llama_dir), PROMPT, page=PAGE, graph_mode="build one for the prompt",
                     graph_tc=str(saved_graph / "tc"), graph_logits=3)  # fmt: skip
    assert not errors(fresh) and fresh.button(key="graph_run").label == "Build the graph again"
    assert set(_nodes(figures(fresh)[0])) == {n["id"] for n in data["nodes"]}
    long = open_app(str(tiny_llama_dir), "x " * 60, page=PAGE, graph_mode="build one for the prompt",
                    graph_tc=str(saved_graph / "tc"))  # fmt: skip
    long.button(key="graph_run").click().run()
    assert len(errors(long)) == 1 and "at most 48" in errors(long)[0]
