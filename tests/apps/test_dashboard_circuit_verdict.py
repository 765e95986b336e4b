"""Issue 27: the Circuit and IOI views say whether a circuit is faithful (complete, minimal) and why, by
the same rules `interp circuit` and `interp ioi` print (interp.circuits.verdict), on saved results whose
numbers are crafted: an unfaithful circuit, one that becomes faithful at a larger size, a faithful one."""

from __future__ import annotations

import json

import pytest
from dashboard_helpers import errors, open_app

from interp.cli import main


@pytest.fixture(scope="module")
def edges_file(tiny_llama_dir, tmp_path_factory):
    """edges.json as `interp circuit` writes it for the tiny Llama (EAP, no exact check, one random draw)."""
    out = tmp_path_factory.mktemp("verdict") / "run"
    assert main(["circuit", "--model", str(tiny_llama_dir), "--task", "ioi", "--method", "eap", "--n-prompts", "4",
                 "--n-heldout", "3", "--exact-top", "0", "--random-draws", "1", "--device", "cpu",
                 "--out", str(out)]) == 0  # fmt: skip
    return out / "edges.json"


def _crafted(edges_file, tmp_path, name: str, points: dict[float, tuple[float, float, float]]):
    """A copy of edges.json whose |score| curve reads `points` (percent -> f, lo, hi), random circuits at 0."""
    data = json.loads(edges_file.read_text())
    curve = data["curves"]["abs"]
    for p, (f, lo, hi) in points.items():
        i = curve["percents"].index(p)
        curve["faithfulness"][i], curve["lo"][i], curve["hi"][i] = f, lo, hi
    data["random"]["faithfulness"] = [[0.0 if p < 100 else 1.0 for p in data["random"]["percents"]]]
    path = tmp_path / name / "edges.json"
    path.parent.mkdir()
    path.write_text(json.dumps(data))
    return path


def _open(tiny_llama_dir, path):
    at = open_app(str(tiny_llama_dir), page="views/circuit.py")
    at.radio(key="circ_mode").set_value("open a saved run").run()
    at.text_input(key="circ_path").input(str(path)).run()
    assert not errors(at) and not at.exception, errors(at)
    return at


def test_circuit_view_says_why_a_circuit_is_or_is_not_faithful(tiny_llama_dir, edges_file, tmp_path, runs_folder):
    path = _crafted(edges_file, tmp_path, "induction", {5: (0.06, 0.01, 0.11), 20: (0.85, 0.82, 0.90), 10: (0.5, 0.3, 0.7)})
    at = _open(tiny_llama_dir, path)
    assert not at.success
    (warning,) = [w.value for w in at.warning]
    assert warning.startswith("**Not faithful** at 5% of edges: f at 5% of edges is 0.060 [0.010, 0.110], below 0.8")
    assert "f first reaches 0.8 at 20% of edges (0.850)" in warning
    rule = next(c.value for c in at.caption if "Verdict's rule:" in c.value)
    assert "f >= 0.8 and the lower end of its 95% interval is >= 0.8" in rule and "random circuit" in rule
    at.select_slider(key="circ_size").set_value(20).run()  # the verdict follows the size, as the tile does
    assert not at.warning and at.metric[1].value == "0.85"
    (success,) = [s.value for s in at.success]
    assert success.startswith("**Faithful** at 20% of edges: f at 20% of edges is 0.850 [0.820, 0.900] >= 0.8")
    assert "clears the random circuits' 0.000" in success
    at.select_slider(key="circ_size").set_value(10).run()
    assert "**Not faithful** at 10% of edges: f at 10% of edges is 0.500 [0.300, 0.700]" in at.warning[0].value


def test_circuit_view_straddling_interval_is_not_shown_faithful(tiny_llama_dir, edges_file, tmp_path, runs_folder):
    at = _open(tiny_llama_dir, _crafted(edges_file, tmp_path, "straddle", {5: (0.85, 0.7, 0.95)}))
    (warning,) = [w.value for w in at.warning]
    assert warning.startswith("**Not shown faithful** at 5% of edges") and "(lower end 0.700)" in warning


IOI = {"model": "tiny", "classes": {"name mover": [[1, 2], [1, 0]], "s-inhibition": [[0, 3]]},
       "faithfulness": 0.739, "faithfulness_ci": [0.6, 0.887], "faithfulness_all_positions": 0.884,
       "faithfulness_all_positions_ci": [0.8, 0.95], "incompleteness": 0.05, "incompleteness_ci": [0.01, 0.12],
       "completeness": [{"removed": "nothing", "n_removed": 0, "gap": 0.02}, {"removed": "class name mover", "gap": 0.05}],
       "min_minimality": 0.05, "minimality_noise": {"mean": 0.007, "max": 0.03},
       "minimality": {"1.2": {"value": 0.4, "lo": 0.3, "hi": 0.5, "passes": True},
                      "1.0": {"value": 0.02, "lo": 0.0498, "hi": 0.06, "passes": False},
                      "0.3": {"value": 0.2, "lo": 0.1, "hi": 0.3, "passes": True}}}  # fmt: skip


def test_ioi_view_shows_each_verdict_and_why_each_head_fails(tiny_llama_dir, tmp_path, runs_folder):
    path = tmp_path / "circuit.json"
    path.write_text(json.dumps(IOI))
    at = open_app(str(tiny_llama_dir), page="views/ioi.py")
    at.radio(key="ioi_mode").set_value("open a saved run").run()
    at.text_input(key="ioi_json").input(str(path)).run()
    assert not errors(at) and not at.exception, errors(at)
    warnings = [w.value for w in at.warning]
    assert warnings[0].startswith("**Faithfulness: not faithful**. F(C)/F(M) is 0.739 [0.600, 0.887], below 0.8")
    assert warnings[1].startswith("**Minimality: not minimal**. 1 of 3 heads have their interval's lower end below 0.05")
    assert "1.0 0.020 [0.0498, 0.060]" in warnings[1]  # never "0.050 < 0.05"
    (success,) = [s.value for s in at.success]
    assert success.startswith("**Completeness: complete**. Incompleteness is 0.050 [0.010, 0.120] <= 0.2")
    rules = [c.value for c in at.caption if " rule: " in c.value]
    assert [r.split(" rule:")[0] for r in rules] == ["Faithfulness", "Completeness", "Minimality"]
    table = next(d.value for d in at.dataframe if "why" in d.value.columns)
    why = dict(zip(table["head"], table["why"]))
    assert why["1.0"] == "fails: lower end 0.0498 < 0.05 (minimality 0.020 [0.0498, 0.060])"
    assert why["1.2"] == "passes: lower end 0.300 >= 0.05"
    assert any("removed" in d.value.columns for d in at.dataframe)  # the completeness table, from the file
