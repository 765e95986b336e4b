"""`interp graph --supernodes FILE`: graph.json records the grouping, graph.html draws each group as one
node with its members' edges summed; a bad file (unknown node, a token, malformed JSON, wrong shape,
missing) is one line, exit 2, and leaves the output folder as it was."""

from __future__ import annotations

import json

import pytest
from cli_helpers import error_line
from graph_helpers import random_transcoders

from interp.cli import main
from interp.features import save
from interp.viz.graph_html import read_embedded

PROMPT = "The cat sat on the mat"


@pytest.fixture(scope="module")
def first(tiny_llama, tiny_llama_dir, tmp_path_factory):
    """A graph written without supernodes (its node ids to group), and the command that wrote it."""
    root = tmp_path_factory.mktemp("graph_supernodes")
    save(random_transcoders(tiny_llama), root / "tc")
    args = ["graph", "--model", str(tiny_llama_dir), "--prompt", PROMPT, "--transcoders", str(root / "tc")]
    assert main([*args, "--out", str(root / "plain")]) == 0
    return root, args, json.loads((root / "plain" / "graph.json").read_text())


def test_supernodes_are_recorded_and_drawn_summed(first, tmp_path, capsys):
    root, args, plain = first
    features = [n["id"] for n in plain["nodes"] if n["kind"] == "feature"]
    groups = {"first two": features[:2], "last": features[-1:]}
    (tmp_path / "s.json").write_text(json.dumps(groups))
    out = tmp_path / "out"
    assert main([*args, "--out", str(out), "--supernodes", str(tmp_path / "s.json")]) == 0
    assert "2 supernodes: first two, last" in capsys.readouterr().out
    graph = json.loads((out / "graph.json").read_text())
    assert graph["supernodes"] == groups
    assert graph["nodes"] == plain["nodes"] and graph["edges"] == plain["edges"]  # the graph itself is unchanged
    page = read_embedded((out / "graph.html").read_text())
    ids = {n["index"]: n["id"] for n in plain["nodes"]}
    expect: dict[tuple[str, str], float] = {}  # by hand from the plain graph's edges
    owner = {m: name for name, ms in groups.items() for m in ms}
    for e in plain["edges"]:
        s, t = owner.get(ids[e["source"]], ids[e["source"]]), owner.get(ids[e["target"]], ids[e["target"]])
        if s != t:
            expect[(s, t)] = expect.get((s, t), 0.0) + e["weight"]
    got = {(e["source"], e["target"]): e["weight"] for e in page["edges"]}
    assert got.keys() == expect.keys() and all(got[k] == pytest.approx(v, abs=1e-9) for k, v in expect.items())
    assert {n["id"] for n in page["nodes"]} & set(features[:2]) == set()  # members drawn as their supernode
    assert next(n for n in page["nodes"] if n["id"] == "first two")["kind"] == "supernode"
    assert any(n["kind"] == "feature" and n["info"].get("top_tokens") for n in page["nodes"])  # a feature's top info
    tracer = json.loads(next((out / "circuit-tracer").glob("the-cat*.json")).read_text())
    assert [g[0] for g in tracer["qParams"]["supernodes"]] == ["first two", "last"]


@pytest.mark.parametrize("case, expect", [
    ("unknown", "names 'F9.999@0', which is no node of this graph"),
    ("token", "only features and error nodes"),
    ("malformed", "is not JSON"),
    ("shape", "must be a JSON object of name -> list of node ids"),
    ("members", "must list one or more node ids"),
    ("missing", "cannot read the supernodes file"),
])  # fmt: skip
def test_bad_supernodes_are_one_line_and_write_nothing(first, tmp_path, capsys, case, expect):
    root, args, plain = first
    file = tmp_path / "s.json"
    text = {"unknown": json.dumps({"x": ["F9.999@0"]}), "token": json.dumps({"x": ["tok@1"]}),
            "malformed": '{"x": ["F0.1@0",', "shape": json.dumps([["F0.1@0"]]), "members": json.dumps({"x": "F0.1@0"})}
    if case != "missing":
        file.write_text(text[case])
    out = tmp_path / "out"  # an earlier result here stays as it was
    out.mkdir()
    (out / "graph.json").write_text("earlier")
    rc = main([*args, "--out", str(out), "--supernodes", str(file)])
    assert rc == 2 and expect in error_line(capsys)
    assert sorted(p.name for p in out.iterdir()) == ["graph.json"] and (out / "graph.json").read_text() == "earlier"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary left beside it
