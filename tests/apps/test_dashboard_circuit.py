"""AppTest of the Circuit view on a tiny model: run with progress, slide the size, explore the graph
(pick a node for its edge table, pin, hide, group by layer), bad task files."""

from __future__ import annotations

import json

from dashboard_helpers import errors, figures, open_app


def test_circuit_view_tiny(tiny_llama_dir, tmp_path):
    at = open_app(str(tiny_llama_dir), page="views/circuit.py")
    assert not errors(at) and any("Find the circuit" in i.value for i in at.info)
    at.number_input(key="circ_prompts").set_value(3).run()
    at.number_input(key="circ_steps").set_value(2).run()
    at.number_input(key="circ_exact").set_value(4).run()
    at.button(key="circ_run").click().run()
    assert not errors(at), errors(at)
    graph, curve, _exact = figures(at)
    assert graph["layout"]["title"]["text"].startswith("Circuit at 5% of edges")
    names = [t["name"] for t in curve["data"] if t.get("name")]
    assert names[0].startswith("random circuits, 3 draws") and names[1].startswith("|score| ranking")  # MIB's Random row
    assert "(grouped graph, 82 edges)" in curve["layout"]["title"]["text"]  # which graph the figure is on
    assert at.metric[0].label == "Edges in the graph (grouped)"
    tiles = {m.label: m.value for m in at.metric}
    assert names[0].endswith(f"(CPR {tiles['Random: CPR']}, CMD {tiles['Random: CMD']})")  # the tiles are the legend's
    preview, exact_table = at.dataframe
    assert len(exact_table.value) == 4 and at.metric[0].value == "82"
    assert 1 <= len(preview.value) <= 5 and list(preview.value.columns) == ["clean", "corrupted"]
    assert any("m(full)" in c.value and "m(∅)" in c.value and "faithful" in c.value for c in at.caption)
    assert at.metric[1].label == "f at 5% of edges"
    at.select_slider(key="circ_size").set_value(50).run()
    assert figures(at)[0]["layout"]["title"]["text"].startswith("Circuit at 50% of edges")
    assert at.metric[1].label == "f at 50% of edges"  # the tile follows the slider, with the curve's value there
    line = next(t for t in figures(at)[1]["data"] if t.get("name", "").startswith("|score| ranking"))
    assert at.metric[1].value == f"{line['y'][list(line['x']).index(50)]:.2f}"
    assert at.metric[3].help and "|score|" in at.metric[3].help and "signed" in at.metric[2].help
    # the result is kept: no second run; IOI's side-by-side offers the other counterfactual alone
    assert [(b.key, b.label) for b in at.button] == [("circ_both_run", "Find the circuit under abc")]
    explore_graph(at)
    assert any(c.value.startswith("Counterfactual: s2-io.") for c in at.caption)  # MIB's IOI counterfactual by default
    at.radio(key="circ_corruption").set_value("abc").run()  # another counterfactual is another circuit
    at.button(key="circ_run").click().run()
    assert not errors(at) and any(c.value.startswith("Counterfactual: abc.") for c in at.caption)
    both_side_by_side(at)
    # a task file whose pair lengths differ: a one-line error, the page keeps working
    bad = tmp_path / "bad.jsonl"
    rows = [{"clean": "a b c", "corrupted": "a b d", "answer": " e"}, {"clean": "a b c d e f", "corrupted": "x", "answer": " e"},
            {"clean": "a b q", "corrupted": "a b d", "answer": " e"}, {"clean": "a b r", "corrupted": "a b d", "answer": " e"}]
    bad.write_text("\n".join(json.dumps(r) for r in rows))
    at.selectbox(key="circ_task").set_value("a task file (.jsonl)").run()
    at.text_input(key="circ_file").input(str(bad)).run()
    at.button(key="circ_run").click().run()
    assert any("line 2" in e and "same length" in e for e in errors(at)) and not at.exception


def _nodes(fig: dict) -> dict:
    """The graph's drawn nodes: name -> (x, y)."""
    return {n: (x, y) for t in fig["data"] if t.get("mode") == "markers+text" for n, x, y in zip(t["customdata"], t["x"], t["y"])}


def explore_graph(at) -> None:
    """Issue 27: the graph at the slider's size, its faithfulness in the title, MLPs on their own row;
    a node picked shows its incoming and outgoing edges; pin keeps its neighbourhood, hide drops it."""
    graph = figures(at)[0]
    title = graph["layout"]["title"]["text"]
    assert f"f = {at.metric[1].value}" in title  # the faithfulness of the circuit as drawn
    nodes = _nodes(graph)
    assert "logits" in nodes and "embed" in nodes
    mlps = {y for n, (x, y) in nodes.items() if n.startswith("m")}
    heads = {y for n, (x, y) in nodes.items() if n.startswith("a")}
    assert len(mlps) <= 1 and not mlps & heads  # the MLPs share one row, no head's
    box = at.selectbox(key="circ_node")
    assert box.value is None and "logits" in box.options and box.options[0] == "embed"
    box.set_value("logits").run()
    assert not errors(at)
    (table,) = [d.value for d in at.dataframe if "direction" in d.value.columns]  # the node's edge table
    assert len(table) > 0 and set(table["direction"]) == {"in"} and set(table["to"]) == {"logits"}
    assert list(table["score"].abs()) == sorted(table["score"].abs(), reverse=True)
    assert any(m.value.startswith("**logits**") for m in at.markdown)
    assert any(t.get("name") == "selected: logits" for t in figures(at)[0]["data"])
    writer = table["from"].iloc[0]
    at.multiselect(key="circ_pin").set_value([writer]).run()
    pinned = _nodes(figures(at)[0])
    assert writer in pinned and "pinned: " + writer in figures(at)[0]["layout"]["title"]["text"]
    at.multiselect(key="circ_pin").set_value([]).run()
    at.multiselect(key="circ_hide").set_value([writer]).run()
    assert writer not in _nodes(figures(at)[0]) and "hidden: " + writer in figures(at)[0]["layout"]["title"]["text"]
    at.multiselect(key="circ_hide").set_value([]).run()
    at.radio(key="circ_group").set_value("layer").run()
    assert not errors(at)
    layered = _nodes(figures(at)[0])
    assert layered and all("." not in n for n in layered)  # a layer's heads are one node, 'a0'
    assert at.selectbox(key="circ_node").value == "logits"  # still offered: kept
    at.radio(key="circ_group").set_value("head").run()


def both_side_by_side(at) -> None:
    """Issue 29: IOI under S2 -> IO and ABC side by side, both circuits already found in this session
    (the page's own runs, not recomputed): f at 5% with its interval, m(full), m(∅), m(C) in logits, on
    the same held-out clean prompts, and the note on what S2 -> IO cannot test and when it became the default."""
    assert not any(b.key == "circ_both_run" for b in at.button)
    table = next(d.value for d in at.dataframe if "counterfactual" in d.value.columns)
    assert list(table["counterfactual"]) == ["s2-io (MIB's)", "abc (Wang et al.'s)"]
    assert {"f at 5%", "95% interval", "m(full)", "m(∅)", "m(C at 5%)", "random at 5%"} <= set(table.columns)
    assert table["m(full)"].iloc[0] != table["m(full)"].iloc[1] or table["m(∅)"].iloc[0] != table["m(∅)"].iloc[1]
    for _, row in table.iterrows():  # f is m(C) between m(∅) and m(full), as the table's own numbers say
        assert abs((row["m(C at 5%)"] - row["m(∅)"]) / (row["m(full)"] - row["m(∅)"]) - row["f at 5%"]) < 1e-6
    text = "\n".join(c.value for c in at.caption)
    assert "cannot test anything that acts before S2" in text and "2026-12-02" in text
    assert "Both on the same held-out clean prompts," in text
