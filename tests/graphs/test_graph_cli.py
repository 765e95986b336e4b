"""`interp graph` on a tiny model with random transcoders, and its one-line refusals."""

from __future__ import annotations

import json

import pytest
from cli_helpers import error_line
from graph_helpers import random_transcoders

from interp.cli import main
from interp.features import save


@pytest.fixture(scope="module")
def folders(tiny_llama, tiny_llama_dir, tiny_gpt2, tmp_path_factory):
    root = tmp_path_factory.mktemp("graph_cli")
    save(random_transcoders(tiny_llama), root / "tc")
    save(random_transcoders(tiny_llama, layers=[0]), root / "tc_one_layer")
    save(random_transcoders(tiny_gpt2), root / "tc_gpt2")
    return root, str(tiny_llama_dir)


def test_writes_the_graph_files(folders, capsys):
    root, model = folders
    out = root / "out"
    rc = main(["graph", "--model", model, "--prompt", "The cat sat on the mat", "--transcoders", str(root / "tc"),
               "--out", str(out), "--check", "4", "--slug", "cat"])  # fmt: skip
    assert rc == 0
    assert sorted(p.name for p in out.iterdir()) == ["checks.json", "circuit-tracer", "graph.html", "graph.json"]
    graph = json.loads((out / "graph.json").read_text())
    tracer = json.loads((out / "circuit-tracer" / "cat.json").read_text())
    assert graph["thresholds"] == {"node": 0.8, "edge": 0.98} and tracer["metadata"]["slug"] == "cat"
    meta = json.loads((out / "circuit-tracer" / "graph-metadata.json").read_text())
    assert meta["graphs"][0]["slug"] == "cat"
    checks = json.loads((out / "checks.json").read_text())
    assert checks["modes"]["linear"]["max_gap"] < 1e-4
    printed = capsys.readouterr().out
    assert "replacement score" in printed and "mode linear" in printed


def test_check_scale_scales_the_sampled_features(folders):
    root, model = folders
    got = {}
    for name, scale in (("off", "0"), ("half", "0.5")):
        rc = main(["graph", "--model", model, "--prompt", "The cat sat on the mat", "--transcoders", str(root / "tc"),
                   "--out", str(root / name), "--check", "4", "--check-scale", scale])  # fmt: skip
        assert rc == 0
        got[name] = json.loads((root / name / "checks.json").read_text())
    half, off = got["half"], got["off"]
    assert half["scale"] == 0.5 and off["scale"] == 0.0 and half["nodes"] == off["nodes"]
    # the prediction is linear in (scale - 1): halving a feature predicts half of switching it off
    assert half["predicted"] == pytest.approx([0.5 * x for x in off["predicted"]], rel=1e-4, abs=1e-7)
    assert half["modes"]["linear"]["max_gap"] < 1e-4  # the linear mode is exact at any scale


@pytest.mark.parametrize("case, expect", [
    ("no_folder", "no transcoder folder"),
    ("other_model", "made for"),
    ("missing_layer", "no layer 1"),
    ("empty", "empty prompt"),
    ("too_long", "reads at most"),
    ("threshold", "between 0 and 1"),
    ("scale", "--check-scale must be a finite number other than 1"),
])  # fmt: skip
def test_bad_input_is_one_line(folders, tmp_path, capsys, case, expect):
    root, model = folders
    tc, prompt, extra = str(root / "tc"), "a b c", []
    if case == "no_folder":
        tc = str(root / "nope")
    elif case == "other_model":
        tc = str(root / "tc_gpt2")
    elif case == "missing_layer":
        tc = str(root / "tc_one_layer")
    elif case == "empty":
        prompt = "   "
    elif case == "too_long":
        prompt = "x " * 100
    elif case == "scale":
        extra = ["--check", "2", "--check-scale", "1"]
    else:
        extra = ["--edge-threshold", "1.5"]
    rc = main(
        ["graph", "--model", model, "--prompt", prompt, "--transcoders", tc, "--out", str(tmp_path / "o"), *extra]
    )
    assert rc == 2 and expect in error_line(capsys)
    assert not (tmp_path / "o").exists()
