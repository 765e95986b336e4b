"""`interp ioi` end to end: SmolLM2's circuit, the paper's GPT-2 heads (network), bad input."""

from __future__ import annotations

import json

import pytest

from interp.circuits.discover import DiscoveryConfig
from interp.cli import main


@pytest.mark.slow
def test_interp_ioi_finds_a_faithful_circuit_in_smollm2(smollm2, tmp_path, capsys):
    rc = main(["ioi", "--model", "smollm2-135m", "--n-prompts", "16", "--n-heldout", "16", "--seed", "0",
               "--device", "cpu", "--no-checks", "--out", str(tmp_path)])  # fmt: skip
    assert rc == 0
    j = json.loads((tmp_path / "circuit.json").read_text())
    assert j["n_prompts"] == 16 and j["n_heldout"] == 16
    assert j["clean_logit_diff"] > j["corrupted_logit_diff"] + 1.0  # SmolLM2 does IOI
    classes = j["classes"]
    # every class it reports has heads; the backbone of the circuit is there
    assert classes and all(len(heads) > 0 for heads in classes.values())
    assert {"name mover", "s-inhibition"} <= set(classes)
    for heads in classes.values():
        assert all(0 <= layer < 30 and 0 <= h < 9 for layer, h in heads)
    # held-out faithfulness: every head outside the circuit mean-ablated
    assert j["faithfulness"] >= 0.6
    assert (tmp_path / "circuit.html").is_file() and (tmp_path / "path_logits.html").is_file()
    out = capsys.readouterr().out
    assert "faithfulness" in out and "name mover" in out


@pytest.mark.network
def test_gpt2_small_recovers_the_papers_heads(tmp_path):
    from interp import WorkbenchError, load
    from interp.circuits.discover import discover
    from interp.data.ioi import make_ioi

    try:
        model = load("gpt2", device="cpu")
    except WorkbenchError as e:
        pytest.skip(f"GPT-2 small is not cached and the hub is unreachable: {e}")
    found = discover(model, make_ioi(model, 24, seed=0), DiscoveryConfig())
    name_movers = set(found.classes.get("name mover", []))
    s_inhibition = set(found.classes.get("s-inhibition", []))
    assert len(name_movers & {(9, 9), (9, 6), (10, 0)}) >= 2, found.classes
    assert len(s_inhibition & {(7, 3), (7, 9), (8, 6), (8, 10)}) >= 2, found.classes


def test_bad_input(tiny_gpt2_dir, tmp_path, capsys):
    assert main(["ioi", "--model", "smollm2-135m", "--n-prompts", "0", "--out", str(tmp_path)]) == 2
    assert "discovery needs at least 1 prompt" in capsys.readouterr().err
    assert (
        main(["ioi", "--model", str(tiny_gpt2_dir), "--n-prompts", "4", "--device", "cpu", "--out", str(tmp_path)]) == 2
    )
    assert "needs at least 4" in capsys.readouterr().err
    assert main(["ioi", "--model", str(tmp_path / "nowhere"), "--out", str(tmp_path)]) == 2
    assert not (tmp_path / "circuit.json").exists()
