"""`interp circuit --graph mib --scoring-draws N`: MIB's ungrouped graph end to end, recorded in edges.json,
and intervals that resample the scoring prompts too."""

from __future__ import annotations

import json

import pytest

from interp.cli import main


def _run(model_dir, out, *flags) -> dict:
    args = ["circuit", "--model", str(model_dir), "--task", "ioi", "--method", "eap", "--n-prompts", "4",
            "--n-heldout", "3", "--exact-top", "0", "--random-draws", "0", "--device", "cpu", "--out", str(out), *flags]  # fmt: skip
    assert main(args) == 0
    return json.loads((out / "edges.json").read_text())


def test_mib_graph_and_scoring_draws_end_to_end(tiny_llama_dir, tmp_path, capsys):
    from interp import load
    from interp.circuits.types import Graph
    from interp.circuits.ungroup import ungrouped

    model = load(str(tiny_llama_dir), device="cpu")
    ours, mib = Graph.of(model), Graph.of(ungrouped(model))
    assert mib.n_edges > ours.n_edges  # the tiny Llama groups 4 query heads on 2 KV heads
    j = _run(tiny_llama_dir, tmp_path / "mib", "--graph", "mib", "--scoring-draws", "3")
    assert j["graph"]["name"] == "mib" and j["graph"]["n_edges"] == mib.n_edges == j["n_edges"]
    assert j["graph"]["n_nodes"] == mib.n_nodes
    assert any(e["dst"].endswith(".kv3<k>") for e in j["edges"])  # a k input for each of the 4 query heads
    p = j["pooled"]
    assert p["n_draws"] == 3 and len(p["per_draw"]) == 3 and len(p["faithfulness"]) == len(j["curve"])
    assert p["per_draw"][0] == pytest.approx([c["faithfulness"] for c in j["curve"]], abs=1e-5)  # draw 1: the sample
    for f, lo, hi in zip(p["faithfulness"], p["lo"], p["hi"]):
        assert lo <= hi
    printed = capsys.readouterr().out
    assert f"mib graph ({mib.n_edges:,} edges" in printed and "3 scoring draws" in printed
    j = _run(tiny_llama_dir, tmp_path / "ours")
    assert j["graph"]["name"] == "grouped" and j["graph"]["n_edges"] == ours.n_edges and "pooled" not in j
    assert "held-out prompts only" in capsys.readouterr().out


@pytest.mark.parametrize(
    "flags, message",
    [(["--graph", "ungrouped"], "choose grouped or mib"), (["--scoring-draws", "0"], "at least 1"),
     (["--scoring-draws", "2", "--scores", "edges.json"], "scores read from a file cannot be")],
)
def test_bad_graph_or_draws_one_line(tiny_llama_dir, tmp_path, capsys, flags, message):
    args = ["circuit", "--model", str(tiny_llama_dir), "--task", "ioi", "--out", str(tmp_path / "x"), *flags]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and not (tmp_path / "x").exists()
