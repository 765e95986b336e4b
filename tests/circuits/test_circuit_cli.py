"""`interp circuit` end to end on a tiny model, and its bad input: one line, exit 2, nothing written."""

from __future__ import annotations

import json

import pytest
import torch

from interp.cli import main
from interp.errors import WorkbenchError


def _ioi_edges(model_dir, out, *flags) -> dict:
    """`interp circuit --task ioi` with `flags` on the CPU into `out`: it succeeds; its edges.json."""
    assert main(["circuit", "--model", str(model_dir), "--task", "ioi", *flags, "--device", "cpu", "--out", str(out)]) == 0
    return json.loads((out / "edges.json").read_text())


def test_circuit_writes_edges_curve_and_graph(tiny_llama_dir, tmp_path, capsys):
    out = tmp_path / "run"
    j = _ioi_edges(tiny_llama_dir, out, "--method", "eap-ig", "--steps", "2", "--n-prompts", "4", "--n-heldout", "3",
                   "--exact-top", "5")  # fmt: skip
    assert j["task"] == "ioi" and j["method"] == "eap-ig" and j["steps"] == 2
    assert j["corruption"] == j["heldout_corruption"] == "s2-io"  # MIB's IOI counterfactual, on both sides
    assert j["n_edges"] == len(j["edges"]) == 82 and len(j["nodes"]) == 12
    assert set(j["edges"][0]) == {"src", "dst", "score"}
    scores = [abs(e["score"]) for e in j["edges"]]
    assert scores == sorted(scores, reverse=True)
    assert [p["percent"] for p in j["curve"]] == [0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100]
    assert j["curve"][-1]["faithfulness"] == pytest.approx(1.0, abs=1e-6)
    assert {"cpr", "cmd", "faithfulness_at_5pct", "curve_signed"} <= set(j)
    assert len(j["exact_check"]) == 5 and {"estimate", "exact"} <= set(j["exact_check"][0])
    for f in ("curve.html", "graph.html", "exact.html", "plotly.min.js"):
        assert (out / f).is_file()
    printed = capsys.readouterr().out
    assert "12 nodes, 82 edges" in printed and "CPR" in printed and "at 5% of edges" in printed
    assert "corruption s2-io" in printed
    # the scores read back in the graph's edge order, the same numbers the file lists strongest first
    from interp import load
    from interp.circuits.report import read_scores
    from interp.circuits.types import Graph

    graph = Graph.of(load(str(tiny_llama_dir), device="cpu"))
    back = read_scores(out, graph)
    assert back.method == "eap-ig" and back.steps == 2 and back.n_prompts == 4
    assert [(e["src"], e["dst"], e["score"]) for e in j["edges"][:10]] == back.top(10)
    j["edges"][0] = dict(j["edges"][0], src="a9.h9")
    (out / "bad.json").write_text(json.dumps(j))
    with pytest.raises(WorkbenchError, match="not in this model's graph"):
        read_scores(out / "bad.json", graph)


def test_random_row_exact_check_groups_and_mib_file(tiny_llama_dir, tmp_path, capsys):
    """Issue 29: random circuits beside the curve, the exact check on top, random and bottom edges with
    its rank correlation, and MIB's edge file, which --scores reads back to the same curve."""
    from interp import load
    from interp.circuits.mib import read_mib
    from interp.circuits.report import read_scores
    from interp.circuits.types import Graph

    out = tmp_path / "run"
    j = _ioi_edges(tiny_llama_dir, out, "--method", "eap", "--n-prompts", "4", "--n-heldout", "3", "--exact-top", "8",
                   "--random-draws", "2")  # fmt: skip
    r = j["random"]
    assert r["draws"] == 2 and r["percents"] == [p["percent"] for p in j["curve"]] and len(r["faithfulness"]) == 2
    assert r["faithfulness"][0][-1] == pytest.approx(1.0, abs=1e-6) and {"cpr_mean", "cmd_mean", "lo", "hi"} <= set(r)
    assert r["faithfulness_at_5pct"]["lo"] <= r["faithfulness_at_5pct"]["faithfulness"] <= r["faithfulness_at_5pct"]["hi"]
    assert [e["group"] for e in j["exact_check"]] == ["top"] * 4 + ["random"] * 2 + ["bottom"] * 2
    assert j["exact_check_summary"]["n"] == 8 and -1 <= j["exact_check_summary"]["spearman"] <= 1
    printed = capsys.readouterr().out
    assert "random circuits (2 draws" in printed and "Spearman" in printed and "2 from the bottom half" in printed
    assert "random circuits" in (out / "curve.html").read_text() and "drawn at random" in (out / "exact.html").read_text()
    graph = Graph.of(load(str(tiny_llama_dir), device="cpu"))
    mib = read_mib(out / "mib_edges.json", graph)
    assert torch.allclose(mib.scores, read_scores(out, graph).scores, atol=1e-6) and mib.method == "eap"
    # MIB's file as --scores: no scoring, the same held-out curve
    again = _ioi_edges(tiny_llama_dir, tmp_path / "again", "--scores", str(out / "mib_edges.json"), "--n-prompts", "4",
                       "--n-heldout", "3", "--exact-top", "0", "--random-draws", "0")  # fmt: skip
    assert "random" not in again and again["exact_check"] == [] and again["method"] == "eap"
    assert [p["faithfulness"] for p in again["curve"]] == pytest.approx([p["faithfulness"] for p in j["curve"]], abs=1e-5)


def test_task_file_and_exact_method(tiny_gpt2_dir, tmp_path):
    rows = [{"clean": f"The {w} sat on the mat and then the", "corrupted": f"The {v} sat on the mat and then the",
             "answer": " cat", "distractor": " dog"}
            for w, v in [("cat", "dog"), ("bird", "fish"), ("cow", "pig"), ("man", "boy")]]  # fmt: skip
    path = tmp_path / "pairs.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    out = tmp_path / "run"
    rc = main(["circuit", "--model", str(tiny_gpt2_dir), "--task", str(path), "--method", "exact", "--exact-top", "3",
               "--device", "cpu", "--out", str(out)])  # fmt: skip
    assert rc == 0
    j = json.loads((out / "edges.json").read_text())
    assert j["task"] == "pairs" and j["n_prompts"] == 2 and j["n_heldout"] == 2 and j["method"] == "exact"
    assert j["corruption"] is None  # a task file brings its own corrupted prompts
    assert all(r["estimate"] == r["exact"] for r in j["exact_check"])  # exact scores are their own check


def _errors(capsys) -> list[str]:
    """The lines the CLI printed as errors (stderr also carries the loaders' progress bars)."""
    return [line for line in capsys.readouterr().err.replace("\r", "\n").splitlines() if line.startswith("error:")]


BAD_ROWS = {
    "lengths": ({"clean": "a b c d", "corrupted": "a b", "answer": " e", "distractor": " f"}, "tokenize to the same length"),
    "multi-token": ({"clean": "one two", "corrupted": "six ten", "answer": " antidisestablishmentarianism", "distractor": " f"},
                    "give a single-token answer"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(BAD_ROWS))
def test_bad_task_files_write_nothing(tiny_gpt2_dir, tmp_path, capsys, case):
    row, message = BAD_ROWS[case]
    good = [{"clean": f"x y {c}", "corrupted": "x y w", "answer": " a", "distractor": " b"} for c in "zqr"]
    path = tmp_path / "bad.jsonl"  # the bad row on line 2, and enough good ones for 2 held-out prompts
    path.write_text("".join(json.dumps(r) + "\n" for r in [good[0], row, *good[1:]]))
    out = tmp_path / "run"
    assert main(["circuit", "--model", str(tiny_gpt2_dir), "--task", str(path), "--device", "cpu", "--out", str(out)]) == 2
    errors = _errors(capsys)
    assert len(errors) == 1 and message in errors[0] and "line 2" in errors[0]
    assert not out.exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--method", "acdc"], "unknown method 'acdc'"),
        (["--task", "sorting"], "unknown task 'sorting'"),
        (["--metric", "accuracy"], "unknown metric 'accuracy'"),
        (["--ablation", "zero"], "unknown ablation 'zero'"),
        (["--steps", "0"], "at least 1 step"),
    ],
)
def test_bad_settings_fail_before_loading(tmp_path, capsys, argv, message):
    out = tmp_path / "run"
    base = {"--model": "/nonexistent/model", "--task": "ioi", "--out": str(out)}
    for k, v in zip(argv[::2], argv[1::2]):
        base[k] = v
    assert main(["circuit", *[x for kv in base.items() for x in kv]]) == 2
    errors = _errors(capsys)
    assert len(errors) == 1 and message in errors[0] and not out.exists()


def test_too_shallow_a_model(tmp_path, capsys):
    from interp.models.inhouse import NativeSpec, build_native, save_inhouse
    from interp.models.tokenizers import gpt2_tokenizer

    tok = gpt2_tokenizer()
    spec = NativeSpec(n_layers=1, d_model=32, n_heads=4, d_head=8, d_mlp=64, n_ctx=64, d_vocab=len(tok))
    folder = tmp_path / "one-layer"
    save_inhouse(build_native(spec, tok), spec, folder)
    out = tmp_path / "run"
    assert main(["circuit", "--model", str(folder), "--task", "induction", "--device", "cpu", "--out", str(out)]) == 2
    (err,) = _errors(capsys)
    assert "needs at least 2" in err and "deeper model" in err and not out.exists()


def test_ioi_corruption_option_reaches_both_sides(tiny_llama_dir, tmp_path, capsys):
    j = _ioi_edges(tiny_llama_dir, tmp_path / "abc", "--corruption", "abc", "--method", "eap", "--n-prompts", "3",
                   "--n-heldout", "2", "--exact-top", "0")  # fmt: skip
    assert j["corruption"] == j["heldout_corruption"] == "abc"
    assert "corruption abc" in capsys.readouterr().out


def test_out_is_replaced_whole_and_a_killed_write_keeps_the_old_run(tiny_llama_dir, tmp_path, monkeypatch):
    """Issue 28: a rerun into --out, or a kill during the writes, once left the new curve.html and
    graph.html beside the old edges.json and exact.html. The folder is built beside --out and
    renamed into place; a write that dies leaves the earlier run whole, and the next run clears
    what a kill -9 left beside --out."""
    from interp.circuits import report

    out = tmp_path / "run"
    first = _ioi_edges(tiny_llama_dir, out, "--steps", "1", "--n-prompts", "3", "--exact-top", "3")
    assert (out / "exact.html").is_file() and len(first["exact_check"]) == 3
    files = {p.name: p.read_bytes() for p in out.iterdir()}
    real = report.write_circuit

    def dies_midway(rep, folder, *a, **k):
        real(rep, folder, *a, **k)
        raise KeyboardInterrupt  # the kill, after every file of the new run was written

    monkeypatch.setattr(report, "write_circuit", dies_midway)
    assert main(["circuit", "--model", str(tiny_llama_dir), "--task", "ioi", "--steps", "2", "--n-prompts", "3",
                 "--exact-top", "0", "--device", "cpu", "--out", str(out)]) == 130  # fmt: skip
    assert {p.name: p.read_bytes() for p in out.iterdir()} == files  # the first run, untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no temporary, no lock left
    monkeypatch.setattr(report, "write_circuit", real)
    (tmp_path / ".run.tmp-killed").mkdir()  # what a kill -9 leaves
    second = _ioi_edges(tiny_llama_dir, out, "--steps", "2", "--n-prompts", "3", "--exact-top", "0")
    assert second["steps"] == 2 and second["exact_check"] == []
    assert sorted(p.name for p in out.iterdir()) == ["curve.html", "edges.json", "graph.html", "mib_edges.json", "plotly.min.js"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_progress_shows_from_the_first_second(tiny_llama_dir, tmp_path, capsys, monkeypatch):
    """Issue 28: a long first step (a slow model load, a long prompt's forward) showed nothing. The
    bar names the stage at once and its clock keeps moving while one step runs."""
    import sys
    import time

    loading = sys.modules["interp.models.load"]
    real = loading.load

    def slow(*a, **k):
        time.sleep(2.5)
        return real(*a, **k)

    monkeypatch.setattr(loading, "load", slow)
    out = tmp_path / "run"
    assert main(["circuit", "--model", str(tiny_llama_dir), "--task", "ioi", "--steps", "1", "--n-prompts", "2",
                 "--exact-top", "0", "--device", "cpu", "--out", str(out)]) == 0  # fmt: skip
    captured = capsys.readouterr()
    frames = captured.err.replace("\r", "\n").splitlines()
    loads = [f for f in frames if f.startswith("loading ")]
    assert any("[00:02<" in f for f in loads), loads  # redrawn while the load ran: its clock moved
    assert "estimated: about" in captured.out and "budget 60 min" in captured.out


def test_max_minutes_lets_a_long_run_go(tiny_llama_dir, tmp_path, capsys, monkeypatch):
    """The budget refuses a run estimated above it and names the flag; that flag lets it run."""
    monkeypatch.setattr("interp.circuits.cost.seconds_per_forward", lambda *a, **k: 0.5)  # a slow machine
    argv = ["circuit", "--model", str(tiny_llama_dir), "--task", "ioi", "--method", "exact", "--n-prompts", "2",
            "--exact-top", "0", "--device", "cpu", "--out", str(tmp_path / "run")]  # fmt: skip
    assert main(argv + ["--max-minutes", "0.5"]) == 2
    (line,) = _errors(capsys)
    assert "more than the budget of 0.5 min" in line and "pass --max-minutes" in line
    assert not (tmp_path / "run").exists()
    assert main(argv + ["--max-minutes", "120"]) == 0
    assert json.loads((tmp_path / "run" / "edges.json").read_text())["method"] == "exact"
