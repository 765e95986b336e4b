"""`interp ioi` end to end: SmolLM2's circuit, the paper's GPT-2 heads (network), bad input."""

from __future__ import annotations

import json

import pytest
import torch

from interp.circuits.discover import DiscoveryConfig
from interp.cli import main


@pytest.fixture(scope="module")
def smol_report(smollm2):
    """One small run on SmolLM2 with the checks on (8 + 8 prompts, ABC means from 16 prompts per
    template to keep CI short; the CLI default is 64), shared by the tests below."""
    from interp.circuits.pipeline import run_ioi

    return run_ioi(smollm2, 8, seed=0, n_heldout=8, checks=True, n_abc=16)


@pytest.mark.slow
def test_smollm2_circuit_held_out_with_intervals(smol_report):
    j = smol_report.to_json()
    assert j["n_prompts"] == 8 and j["n_heldout"] == 8 and j["n_abc"] == 16
    assert j["clean_logit_diff"] > j["corrupted_logit_diff"] + 1.0  # SmolLM2 does IOI
    classes = j["classes"]
    assert {"name mover", "s-inhibition"} <= set(classes) and all(classes.values())
    for heads in classes.values():
        assert all(0 <= layer < 30 and 0 <= h < 9 for layer, h in heads)
    # held out: no template and no name of the evaluation prompts was seen by discovery
    split = j["split"]
    assert not set(split["discovery"]["templates"]) & set(split["evaluation"]["templates"])
    assert not set(split["discovery"]["names"]) & set(split["evaluation"]["names"])
    assert j["class_positions"]["name mover"] == "END" and j["class_positions"]["s-inhibition"] == "END"
    for key in ("faithfulness", "faithfulness_all_positions", "incompleteness", "heldout_model_logit_diff"):
        lo, hi = j[f"{key}_ci"]
        assert lo <= j[key] <= hi and lo < hi
    assert 0.2 < j["faithfulness"] < 1.5  # the circuit carries a good part of the logit diff, not all of it
    assert j["minimality"] and any(m["passes"] for m in j["minimality"].values())
    # the heads in discovery's order, and the faithfulness of the first k of them for every k
    ranked = [tuple(r["head"]) for r in j["ranked"]]
    assert sorted(ranked) == sorted(tuple(h) for hs in classes.values() for h in hs) and len(set(ranked)) == len(ranked)
    curve = j["faithfulness_curve"]
    assert [p["k"] for p in curve] == list(range(1, len(ranked) + 1)) and [tuple(p["head"]) for p in curve] == ranked
    assert curve[-1]["value"] == pytest.approx(j["faithfulness"])
    assert j["corruption"] == "abc" and j["config"]["threshold"] == DiscoveryConfig().threshold
    greedy = [c for c in j["completeness"] if c["removed"] == "greedy"]
    assert len(greedy) == 1 and 1 <= greedy[0]["n_removed"] <= 5
    assert j["minimality_noise"]["heads"] and 0 <= j["minimality_noise"]["mean"] <= j["minimality_noise"]["max"]


@pytest.mark.slow
def test_backup_name_movers_are_the_heads_that_compensate(smol_report, smollm2):
    """Recomputed here with plain hooks: knock the name movers out (their output from each
    prompt's ABC run), read every head's output at END through the clean run's final norm scale
    and the IO - S unembedding; the backups are exactly the later heads whose direct effect rises
    by at least backup_effect of the IOI gap (less those an earlier class claimed)."""
    from circuit_helpers import logit_diff

    from interp.data.ioi import make_ioi

    model, d = smollm2, smol_report.discovery
    cfg = d.config
    movers = d.classes["name mover"]
    ds = make_ioi(model, 8, seed=0, part="discovery")
    L = model.info.n_layers
    z_names = {f"blocks.{layer}.attn.hook_z" for layer in range(L)}
    final = f"blocks.{L - 1}.hook_resid_post"
    clean_logits, clean = model.run_with_cache(ds.clean, names_filter=lambda n: n in z_names | {final})
    corr_logits, corr = model.run_with_cache(ds.corrupted, names_filter=lambda n: n in z_names)

    def knock_out(z, hook, layer):
        for ml, mh in movers:
            if ml == layer:
                z[:, :, mh] = corr[f"blocks.{layer}.attn.hook_z"][:, :, mh]
        return z

    edits = [(f"blocks.{layer}.attn.hook_z", lambda z, hook, layer=layer: knock_out(z, hook, layer))
             for layer in sorted({m[0] for m in movers})]
    with model.hooks(fwd_hooks=edits):
        _, knocked = model.run_with_cache(ds.clean, names_filter=lambda n: n in z_names)
    rows, end = torch.arange(len(ds)), ds.positions["END"]
    r = clean[final][rows, end]
    scale = (r.pow(2).mean(-1, keepdim=True) + model.bridge.cfg.eps).sqrt()  # SmolLM2: RMSNorm
    u = (model.bridge.W_U[:, ds.answers] - model.bridge.W_U[:, ds.distractors]).T * model.bridge.ln_final.weight / scale
    gap = float((logit_diff(clean_logits, ds) - logit_diff(corr_logits, ds)).mean().detach())
    rise = torch.zeros(L, model.info.n_heads)
    for layer in range(L):
        W_O = model.bridge.blocks[layer].attn.W_O
        for h in range(model.info.n_heads):
            before = ((clean[f"blocks.{layer}.attn.hook_z"][rows, end, h] @ W_O[h]) * u).sum(-1)
            after = ((knocked[f"blocks.{layer}.attn.hook_z"][rows, end, h] @ W_O[h]) * u).sum(-1)
            rise[layer, h] = float((after - before).mean().detach()) / gap
    torch.testing.assert_close(d.effects["backup compensation"], rise, atol=2e-3, rtol=0)
    direct = ("name mover", "s suppression", "negative name mover", "other direct")
    earlier = {h for h, c in d.ranked if c in direct}  # step one's heads keep their class
    first = min(layer for layer, _ in movers)
    expected = [(layer, h) for layer in range(first + 1, L) for h in range(model.info.n_heads)
                if rise[layer, h] >= cfg.backup_effect and (layer, h) not in earlier]
    assert set(d.classes.get("backup name mover", [])) == set(expected)
    assert float(rise[first + 1 :].max()) >= cfg.backup_effect  # some later head compensates: not vacuous


@pytest.mark.slow
def test_interp_ioi_runs_on_one_and_two_prompts(smollm2, tmp_path, capsys):
    """--n-prompts 2 used to crash (KeyError: 20); 1 and 2 run end to end and write their files."""
    for n in ("1", "2"):
        out = tmp_path / n
        rc = main(["ioi", "--model", "smollm2-135m", "--n-prompts", n, "--n-abc", "4", "--no-checks",
                   "--device", "cpu", "--out", str(out)])  # fmt: skip
        assert rc == 0, capsys.readouterr().err
        j = json.loads((out / "circuit.json").read_text())
        assert j["n_prompts"] == int(n) and (out / "circuit.html").is_file() and (out / "path_logits.html").is_file()
        # the path-patching effects travel in circuit.json (the graph's edge widths when it is read back)
        assert "logits" in j["effects"] and len(j["effects"]["logits"]) == smollm2.info.n_layers
        assert all(len(row) == smollm2.info.n_heads for row in j["effects"]["logits"])
        printed = capsys.readouterr().out
        assert "faithfulness" in printed and "other names" in printed


@pytest.mark.slow
def test_a_million_prompts_are_refused_before_the_work(smollm2, tmp_path, capsys):
    assert main(["ioi", "--model", "smollm2-135m", "--n-prompts", "1000000", "--device", "cpu",
                 "--out", str(tmp_path / "big")]) == 2  # fmt: skip
    err = capsys.readouterr().err  # the model's own loading bar comes first, then one line
    last = err.strip().splitlines()[-1]
    assert "GiB" in last and "use at most about" in last and "Traceback" not in err
    assert not (tmp_path / "big" / "circuit.json").exists()


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
    assert main(["ioi", "--model", "smollm2-135m", "--n-abc", "0", "--out", str(tmp_path)]) == 2
    assert "--n-abc must be at least 1" in capsys.readouterr().err
    assert not (tmp_path / "circuit.json").exists()


def test_memory_estimate_refuses_what_cannot_fit(tiny_llama, monkeypatch):
    from interp.circuits import pipeline
    from interp.errors import WorkbenchError

    small = pipeline.memory_needed(tiny_llama, 10, 10, 20)
    assert pipeline.memory_needed(tiny_llama, 20, 10, 20)[0] == 2 * small[0]  # linear in the prompts
    monkeypatch.setattr("interp.models.device.available_bytes", lambda device: 10 * small[0])
    pipeline.check_memory(tiny_llama, 10, 10)  # fits
    with pytest.raises(WorkbenchError, match=r"1,000,000 discovery prompts need at least .* GiB .* use at most about"):
        pipeline.check_memory(tiny_llama, 1_000_000, 10)


def test_the_default_discovery_sample_is_the_validated_one(tmp_path, monkeypatch):
    """Without --n-prompts the command discovers on N_DISCOVERY prompts (chosen on validation:
    benchmarks/ioi_admission.py), as run_ioi does, and holds out as many."""
    import inspect

    from interp.circuits import pipeline
    from interp.circuits.discover import N_DISCOVERY
    from interp.commands import ioi

    seen = {}
    monkeypatch.setattr(ioi, "_run", lambda args: seen.update(n=args.n_prompts, held=args.n_heldout) or 0)
    assert main(["ioi", "--model", "smollm2-135m", "--out", str(tmp_path / "run")]) == 0
    assert seen == {"n": N_DISCOVERY, "held": None} and N_DISCOVERY == 48
    assert inspect.signature(pipeline.run_ioi).parameters["n_prompts"].default == N_DISCOVERY
    assert pipeline.check_sizes(N_DISCOVERY, None) == N_DISCOVERY
