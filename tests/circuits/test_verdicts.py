"""Issue 27: every circuit verdict says why. The rules of interp.circuits.verdict on crafted numbers
(faithful, not faithful, an interval straddling the line, no interval, random circuits as good, undefined),
completeness and minimality likewise, and `interp circuit` / `interp ioi` on tiny models printing the
same verdicts they record."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest

from interp.circuits.faithfulness import RandomBaseline
from interp.circuits.types import Curve
from interp.circuits.verdict import (
    GOAL,
    circuit_verdict,
    completeness,
    faithfulness,
    head_minimality,
    ioi_verdicts,
    minimality,
    num,
)
from interp.cli import main

RANDOM = (0.0, -0.02, 0.02)  # mean, min, max over draws


@pytest.mark.parametrize(
    "f, lo, hi, random, word, says",
    [
        (0.88, 0.85, 0.90, RANDOM, "faithful", ["0.880 [0.850, 0.900] >= 0.8", "clears the random circuits' 0.000",
                                                "best of 3 draws: 0.020"]),
        (0.88, 0.85, 0.90, None, "faithful", ["no random circuits measured"]),
        (0.8, 0.8, 0.9, None, "faithful", [">= 0.8"]),  # the line itself is on the faithful side
        (0.06, 0.01, 0.11, RANDOM, "not faithful", ["0.060 [0.010, 0.110], below 0.8", "fix it"]),
        (0.01, -0.03, 0.05, RANDOM, "not faithful", ["no better than the random circuits' 0.000"]),
        (0.75, 0.60, 0.90, None, "not faithful", ["below 0.8", "its interval reaches 0.8"]),
        (0.85, 0.70, 0.95, RANDOM, "not shown faithful", ["reaches below 0.8 (lower end 0.700)", "more held-out"]),
        (0.85, 0.7999, 0.95, None, "not shown faithful", ["lower end 0.7999"]),  # never "0.800 < 0.8"
        (0.90, None, None, None, "not shown faithful", ["0.900 >= 0.8, but it has no interval"]),
        (0.90, math.nan, math.nan, RANDOM, "not shown faithful", ["no interval"]),
        (0.90, 0.85, 0.95, (0.87, 0.84, 0.91), "not shown faithful", ["does not clear the random circuits' 0.870",
                                                                      "best of 3 draws: 0.910", "do as well"]),
        (math.nan, math.nan, math.nan, None, "no verdict", ["undefined", "the full model and the empty circuit"]),
    ],
)  # fmt: skip
def test_faithfulness_rule_on_crafted_numbers(f, lo, hi, random, word, says):
    v = faithfulness(f, lo, hi, "f at 5% of edges", random, fix="fix it", n_draws=3 if random else None)
    assert v.word == word and v.passed == (word == "faithful")
    assert v.line().startswith(f"{word}: f at 5% of edges ")
    for s in says:
        assert s in v.why, v.why
    if word != "not faithful":
        assert "fix it" not in v.why  # what to try is said only where the circuit is not faithful
    assert f"f >= {GOAL:g}" in v.rule and ("random circuit" in v.rule) == (random is not None)
    d = v.to_dict()
    assert d["word"] == word and d["text"] == v.line() and d["rule"] == v.rule


def test_numbers_never_round_onto_the_line():
    assert num(0.0498, 0.05) == "0.0498" and num(0.05, 0.05) == "0.050" and num(0.123, 0.05) == "0.123"
    assert num(0.79999, 0.8) == "0.79999" and num(None) == "None"


def _curve(percents, f, lo, hi) -> Curve:
    n = len(percents)
    return Curve(list(percents), [1] * n, [1] * n, list(f), list(lo), list(hi), 0.5, 0.5, (0.4, 0.6), (0.4, 0.6),
                 2.0, 0.0, [2.0 * x for x in f], "abs", True, "counterfactual", 10)  # fmt: skip


def test_circuit_verdict_reads_the_curve_at_the_size_and_says_where_it_becomes_faithful():
    """The induction task's case: f 0.06 at 5%; the curve reaches 0.8 at 20% of the edges."""
    curve = _curve([1, 5, 20, 100], [0.01, 0.06, 0.85, 1.0], [0.0, 0.01, 0.82, 1.0], [0.02, 0.11, 0.9, 1.0])
    rnd = RandomBaseline([1, 5, 20, 100], [0, 1], [[1] * 4] * 2, [[0.0, 0.01, 0.1, 1.0], [0.0, 0.03, 0.2, 1.0]],
                         [0.1, 0.1], [0.9, 0.9], 2.0, 0.0, True, "counterfactual", 10)  # fmt: skip
    report = SimpleNamespace(curve=curve, random=rnd)
    v = circuit_verdict(report, 5)
    assert v.word == "not faithful" and "f at 5% of edges is 0.060 [0.010, 0.110], below 0.8" in v.why
    assert "f first reaches 0.8 at 20% of edges (0.850)" in v.why and "edges kept carry little" in v.why
    at20 = circuit_verdict(report, 20)
    assert at20.passed and "0.850 [0.820, 0.900]" in at20.why and "random circuits' 0.150 (best of 2 draws: 0.200)" in at20.why
    bare = circuit_verdict(SimpleNamespace(curve=_curve([5, 100], [0.5, 1.0], [0.4, 1.0], [0.6, 1.0]), random=None), 5)
    assert bare.word == "not faithful" and "no circuit below 100% of edges reaches 0.8" in bare.why
    assert "random circuit" not in bare.rule


ROWS = [{"removed": "nothing", "n_removed": 0, "gap": 0.01}, {"removed": "greedy", "heads": [[3, 1], [2, 0]], "gap": 0.5},
        {"removed": "class name mover", "n_removed": 2, "gap": 0.2}]  # fmt: skip


@pytest.mark.parametrize(
    "value, lo, hi, word, says",
    [
        (0.05, 0.02, 0.12, "complete", ["0.050 [0.020, 0.120] <= 0.2", "the worst of 3 K tried: K = greedy (3.1 2.0)"]),
        (0.55, 0.32, 0.81, "not complete", ["0.550 [0.320, 0.810]", "above 0.2", "K = greedy (3.1 2.0)"]),
        (0.15, 0.05, 0.35, "not shown complete", ["<= 0.2", "reaches above 0.2 (upper end 0.350)"]),
        (0.15, None, None, "not shown complete", ["no interval"]),
        (math.nan, None, None, "no verdict", ["undefined"]),
    ],
)  # fmt: skip
def test_completeness_rule(value, lo, hi, word, says):
    v = completeness(value, lo, hi, ROWS)
    assert v.word == word and v.passed == (word == "complete")
    for s in says:
        assert s in v.why, v.why
    assert "<= 0.2" in v.rule and "|F(C \\ K) - F(M \\ K)|" in v.rule


def test_minimality_names_each_failing_head_with_its_numbers():
    heads = {f"3.{i}": {"value": 0.3, "lo": 0.1 + i / 100, "hi": 0.5} for i in range(4)}
    heads["2.0"] = {"value": 0.03, "lo": 0.0498, "hi": 0.06}  # just under the line
    heads["1.1"] = {"value": 0.01, "lo": -0.02, "hi": 0.04}
    noise = {"mean": 0.007, "max": 0.03}
    v = minimality(heads, 0.05, noise)
    assert v.word == "not minimal" and not v.passed
    assert "2 of 6 heads have their interval's lower end below 0.05" in v.why
    assert v.why.index("1.1 0.010 [-0.020, 0.040]") < v.why.index("2.0 0.030 [0.0498, 0.060]")  # lowest first
    assert "3.0" not in v.why and "0.007 on average, 0.030 at most" in v.why
    assert head_minimality(heads["2.0"], 0.05) == "fails: lower end 0.0498 < 0.05 (minimality 0.030 [0.0498, 0.060])"
    assert head_minimality(heads["3.0"], 0.05) == "passes: lower end 0.100 >= 0.05"
    many = {f"{i}.0": {"value": 0.0, "lo": -0.01 * i, "hi": 0.01} for i in range(9)}
    assert minimality(many, 0.05).why.count(" and 4 more") == 1  # five named, the rest counted
    ok = minimality({h: r for h, r in heads.items() if h.startswith("3.")}, 0.05)
    assert ok.word == "minimal" and ok.passed and "all 4 heads" in ok.why and "the lowest 0.100" in ok.why
    assert ">= 0.05" in v.rule


def test_ioi_verdicts_from_circuit_json():
    circuit = {"faithfulness": 0.739, "faithfulness_ci": [0.600, 0.887], "incompleteness": 0.553,
               "incompleteness_ci": [0.322, 0.809], "completeness": ROWS, "min_minimality": 0.05,
               "minimality": {"23.3": {"value": 0.02, "lo": 0.01, "hi": 0.03}}, "minimality_noise": {}}  # fmt: skip
    got = ioi_verdicts(circuit)
    assert [(k, v.word) for k, v in got.items()] == [("faithfulness", "not faithful"), ("completeness", "not complete"),
                                                       ("minimality", "not minimal")]  # fmt: skip
    assert "F(C)/F(M) is 0.739 [0.600, 0.887], below 0.8" in got["faithfulness"].why
    assert "threshold" in got["faithfulness"].why and "F(C)/F(M) >= 0.8" in got["faithfulness"].rule
    assert "23.3 0.020 [0.010, 0.030]" in got["minimality"].why
    unchecked = {"faithfulness": 0.9, "faithfulness_ci": [0.85, 0.95], "incompleteness": None, "minimality": {}}
    assert list(ioi_verdicts(unchecked)) == ["faithfulness"] and ioi_verdicts(unchecked)["faithfulness"].passed
    assert ioi_verdicts({"faithfulness": 0.9, "faithfulness_ci": "no"})["faithfulness"].word == "not shown faithful"
    assert ioi_verdicts({"faithfulness": 0.9, "minimality": {"1.1": [0.1]}}) == {}  # a file edited by hand: no verdicts


def _verdict_lines(printed: str) -> list[str]:
    return [line.strip() for line in printed.splitlines() if line.strip().startswith(("verdict: ", "rule: "))]


def test_circuit_cli_prints_the_verdict_it_records(tiny_llama_dir, tmp_path, capsys):
    from interp import load
    from interp.runs import open_edges

    out = tmp_path / "run"
    assert main(["circuit", "--model", str(tiny_llama_dir), "--task", "ioi", "--method", "eap", "--n-prompts", "4",
                 "--n-heldout", "3", "--exact-top", "0", "--random-draws", "1", "--device", "cpu",
                 "--out", str(out)]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    saved = json.loads((out / "edges.json").read_text())["verdict"]
    assert saved["percent"] == 5 and saved["word"] in {"faithful", "not faithful", "not shown faithful", "no verdict"}
    assert _verdict_lines(printed) == [f"verdict: {saved['text']}", f"rule: {saved['rule']} (recorded in edges.json)"]
    lines = printed.splitlines()  # after the faithfulness figures and the random row
    assert lines.index(f"verdict: {saved['text']}") > max(i for i, x in enumerate(lines) if x.startswith("random circuits"))
    f = json.loads((out / "edges.json").read_text())["faithfulness_at_5pct"]
    assert f"f at 5% of edges is {num(f['faithfulness'], 0.8)} [" in saved["text"]
    # the report read back (as the dashboard opens it) gives the same verdict
    report, _ = open_edges(out, load(str(tiny_llama_dir), device="cpu"))
    assert circuit_verdict(report, 5).to_dict() == {k: v for k, v in saved.items() if k != "percent"}


def test_ioi_cli_prints_each_verdict_and_every_failing_head(tiny_llama4_dir, tmp_path, capsys):
    out = tmp_path / "ioi"
    assert main(["ioi", "--model", str(tiny_llama4_dir), "--n-prompts", "2", "--n-abc", "2", "--device", "cpu",
                 "--out", str(out)]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    circuit = json.loads((out / "circuit.json").read_text())
    verdicts = ioi_verdicts(circuit)
    assert set(verdicts) == {"faithfulness", "completeness", "minimality"}
    want = [line for v in verdicts.values() for line in (f"verdict: {v.line()}", f"rule: {v.rule}")]
    assert _verdict_lines(printed) == want
    failing = {h: r for h, r in circuit["minimality"].items() if not r["passes"]}
    for head, row in failing.items():
        assert f"{head:<7} {head_minimality(row, circuit['min_minimality'])}" in printed
        assert f"lower end {num(row['lo'], circuit['min_minimality'])} < 0.05" in printed
    assert ("each head that fails, why:" in printed) == bool(failing)
