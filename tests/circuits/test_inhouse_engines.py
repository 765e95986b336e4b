"""The one engine on in-house models, whose native bridge shows no rotary hooks, rotates adjacent pairs
and may use ALiBi: `interp ioi` and `interp circuit` run end to end on attention-only models (evaluate's
replay once called an MLP such models lack), and the replayed block equals the plain references there."""

from __future__ import annotations

import json

import pytest
import torch
from circuit_helpers import scrambled

from interp.cli import main
from interp.circuits.ablate import AblationPlan, Ablator, plan_reference
from interp.circuits.edges import edge_effects, edge_effects_reference
from interp.circuits.path import Receivers, path_patch
from interp.circuits.path_reference import path_patch_reference
from interp.circuits.types import Graph


def _native(positional: str, attn_only: bool, n_layers: int = 4):
    from interp.models.inhouse import NativeSpec, build_native
    from interp.models.tokenizers import gpt2_tokenizer

    tok = gpt2_tokenizer()
    spec = NativeSpec(n_layers=n_layers, d_model=32, n_heads=4, n_kv_heads=2, d_head=8, d_mlp=64, n_ctx=64,
                      d_vocab=len(tok), attn_only=attn_only, normalization="RMS", positional=positional, seed=3)  # fmt: skip
    model = build_native(spec, tok)
    with torch.no_grad():
        for block in model.bridge.blocks:
            block.attn.q.original_component.weight.mul_(16.0)
    return model, spec


@pytest.mark.parametrize("positional", ["standard", "rotary", "alibi"])
def test_ioi_and_circuit_run_on_an_attention_only_model(positional, tmp_path, capsys):
    from interp.models.inhouse import save_inhouse

    model, spec = _native(positional, attn_only=True)
    folder = tmp_path / "model"
    save_inhouse(model, spec, folder)
    assert main(["ioi", "--model", str(folder), "--n-prompts", "3", "--n-abc", "2", "--device", "cpu",
                 "--out", str(tmp_path / "ioi")]) == 0  # fmt: skip
    circuit = json.loads((tmp_path / "ioi" / "circuit.json").read_text())
    assert circuit["classes"] and circuit["faithfulness_formula"] == "F(C) / F(M)"
    assert main(["circuit", "--model", str(folder), "--task", "ioi", "--n-prompts", "3", "--exact-top", "3",
                 "--device", "cpu", "--out", str(tmp_path / "circuit")]) == 0  # fmt: skip
    edges = json.loads((tmp_path / "circuit" / "edges.json").read_text())
    assert edges["n_edges"] == Graph.of(model).n_edges and not any("m" == n[0] for n in edges["nodes"])
    assert len(edges["exact_check"]) == 3 and "error" not in capsys.readouterr().err


@pytest.mark.parametrize("positional", ["rotary", "alibi"])
@pytest.mark.parametrize("attn_only", [True, False])
def test_replayed_block_equals_the_references_on_native_models(positional, attn_only):
    model, _ = _native(positional, attn_only, n_layers=3)
    task = scrambled(model, 3, seed=4)
    for receivers in (None, Receivers([(1, 0), (2, 3)], "qkv", "S2")):
        fast, ref = path_patch(model, task, receivers=receivers), path_patch_reference(model, task, receivers=receivers)
        assert float((fast.patched - ref.patched).abs().max()) < 1e-4
        assert float((ref.patched - ref.clean).abs().max()) > 1e-4
    edges = torch.randperm(Graph.of(model).n_edges, generator=torch.Generator().manual_seed(0))[:40]
    fast = edge_effects(model, task, edges=edges).scores[edges]
    ref = edge_effects_reference(model, task, edges=edges)
    assert float((fast - ref).abs().max()) < 1e-5 and float(ref.abs().max()) > 1e-4
    ab = Ablator(model, task)
    assert ab.check()  # the replay reproduces the bridge, so no plan falls back
    g = Graph.of(model)
    writers = torch.zeros(len(g.writers), *task.clean.shape, dtype=torch.bool)
    writers[g.first_head(1) : g.first_head(1) + 2, :, 3:] = True  # two heads of layer 1 replaced from position 3 on
    plan = AblationPlan(writers=writers)
    got = ab.run(plan)
    want = plan_reference(model, task, plan, ab.replacement)
    assert torch.allclose(got, want, atol=1e-5) and float((want - ab.m_full).abs().max()) > 1e-4
