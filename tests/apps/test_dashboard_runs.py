"""Results that last (issue 27): what a view computes is saved to the runs folder in the CLI's own
format, and a fresh session (a reload, another visitor) finds and opens it; what the CLI's --out
wrote opens the same way."""

from __future__ import annotations

import json

from dashboard_helpers import errors, figures, open_app

from interp.cli import main


def _captions(at) -> str:
    return "\n".join(c.value for c in at.caption)


def test_ioi_discovery_is_saved_and_opens_in_a_fresh_session(tiny_llama4_dir, runs_folder):
    at = open_app(str(tiny_llama4_dir), page="views/ioi.py", ioi_prompts=3)
    at.button(key="ioi_run").click().run()
    assert not errors(at), errors(at)
    (folder,) = runs_folder.glob("ioi-*")
    assert {"circuit.json", "run.json", "circuit.html"} <= {p.name for p in folder.iterdir()}
    record = json.loads((folder / "run.json").read_text())
    assert record["model"] == str(tiny_llama4_dir) and record["settings"]["n_prompts"] == 3
    assert "Saved in" in _captions(at) and not list(runs_folder.glob(".*"))  # no temporary left beside it
    heads, faith = at.metric[0].value, at.metric[1].value

    fresh = open_app(str(tiny_llama4_dir), page="views/ioi.py", ioi_prompts=3)  # the same settings: opened, not rerun
    assert not errors(fresh) and "Opened" in _captions(fresh) and folder.name in _captions(fresh)
    assert fresh.button(key="ioi_run").label == "Run discovery again"
    assert (fresh.metric[0].value, fresh.metric[1].value) == (heads, faith)

    main(["ioi", "--model", str(tiny_llama4_dir), "--n-prompts", "3", "--no-checks", "--n-abc", "4",
          "--out", str(runs_folder / "cli-ioi"), "--device", "cpu"])  # fmt: skip
    cli = json.loads((runs_folder / "cli-ioi" / "circuit.json").read_text())
    other = open_app(str(tiny_llama4_dir), page="views/ioi.py")
    other.radio(key="ioi_mode").set_value("open a saved run").run()
    picker = other.selectbox(key="ioi_found")
    assert sorted(o.split(":")[0] for o in picker.options) == sorted(["…/cli-ioi", f"…/{folder.name}"])
    assert "IOI discovery" in picker.options[0] and "n_prompts 3" in picker.options[0]  # what, and its settings
    picker.set_value(str(folder)).run()
    assert (other.metric[0].value, other.metric[1].value) == (heads, faith) and "made by the dashboard" in _captions(other)
    picker.set_value(str(runs_folder / "cli-ioi")).run()
    assert not errors(other), errors(other)
    assert other.metric[1].value == f"{cli['faithfulness']:.2f}" and "made by the cli" in _captions(other)
    assert figures(other)[0]["layout"]["title"]["text"].startswith("IOI circuit in")


def test_circuit_is_saved_and_opens_in_a_fresh_session(tiny_llama_dir, runs_folder):
    settings = {"circ_prompts": 3, "circ_steps": 2, "circ_exact": 3}
    at = open_app(str(tiny_llama_dir), page="views/circuit.py", **settings)
    at.button(key="circ_run").click().run()
    assert not errors(at), errors(at)
    (folder,) = runs_folder.glob("circuit-*")
    assert {"edges.json", "run.json", "curve.html", "graph.html"} <= {p.name for p in folder.iterdir()}
    assert json.loads((folder / "run.json").read_text())["settings"]["method"] == "eap-ig"
    tiles = [m.value for m in at.metric]

    fresh = open_app(str(tiny_llama_dir), page="views/circuit.py", **settings)
    assert not errors(fresh) and "Opened" in "\n".join(c.value for c in fresh.caption)
    assert [m.value for m in fresh.metric] == tiles and len(fresh.dataframe) == 2  # the preview and the exact check
    assert fresh.button(key="circ_run").label == "Find the circuit again"

    main(["circuit", "--model", str(tiny_llama_dir), "--task", "ioi", "--n-prompts", "3", "--steps", "2",
          "--exact-top", "2", "--out", str(runs_folder / "cli-circuit"), "--device", "cpu"])  # fmt: skip
    cli = json.loads((runs_folder / "cli-circuit" / "edges.json").read_text())
    other = open_app(str(tiny_llama_dir), page="views/circuit.py")
    other.radio(key="circ_mode").set_value("open a saved run").run()
    picker = other.selectbox(key="circ_saved")
    assert sorted(o.split(":")[0] for o in picker.options) == sorted(["…/cli-circuit", f"…/{folder.name}"])
    assert all(str(tiny_llama_dir) not in o for o in picker.options)  # no server path reaches a visitor
    picker.set_value(str(folder)).run()
    assert [m.value for m in other.metric] == tiles and not errors(other)
    picker.set_value(str(runs_folder / "cli-circuit")).run()
    assert not errors(other), errors(other)
    assert other.metric[1].value == f"{cli['faithfulness_at_5pct']['faithfulness']:.2f}"
    assert figures(other)[0]["layout"]["title"]["text"].startswith("Circuit at 5% of edges")
    other.select_slider(key="circ_size").set_value(50).run()  # the opened circuit is as live as a found one
    assert figures(other)[0]["layout"]["title"]["text"].startswith("Circuit at 50% of edges")
    other.text_input(key="circ_path").input(str(runs_folder / "nothing")).run()
    assert any("no saved result" in e for e in errors(other)) and not other.exception
