"""Exact edge patching: the batched engine against the plain one-forward-per-edge reference (float32
and bfloat16), and against TransformerLens's direct path patching where the two coincide."""

from __future__ import annotations

import pytest
import torch
from circuit_helpers import scrambled_task

from interp.circuits.edges import EdgePatcher, edge_effects, edge_effects_reference
from interp.data.tasks import end_logits, metric_fn
from interp.errors import WorkbenchError


@pytest.mark.parametrize("fixture", ["tiny_llama", "tiny_gpt2"])
def test_batched_engine_equals_reference(fixture, sharp):
    model = sharp(fixture)
    task = scrambled_task(model, 3, seed=2)
    ref = edge_effects_reference(model, task)
    fast = edge_effects(model, task, chunk_tokens=64)  # a few variants per pass
    err = float((fast.scores - ref).abs().max())
    assert float(ref.abs().max()) > 1e-2 and err < 1e-5, err
    # every kind of input has edges that matter
    kinds = {fast.graph.readers[int(r)].kind for r, v in zip(fast.graph.dst, ref) if abs(float(v)) > 1e-4}
    assert kinds == {"q", "k", "v", "mlp", "logits"}


def test_attention_only_model(tiny_gpt2):
    from interp.models.inhouse import NativeSpec, build_native

    spec = NativeSpec(n_layers=2, d_model=32, n_heads=4, n_kv_heads=2, d_head=8, n_ctx=64, d_vocab=len(tiny_gpt2.tokenizer),
                      attn_only=True, normalization="RMS", seed=3)  # fmt: skip
    model = build_native(spec, tiny_gpt2.tokenizer)
    with torch.no_grad():
        for block in model.bridge.blocks:
            block.attn.q.original_component.weight.mul_(16.0)
    task = scrambled_task(model, 3, seed=1)
    ref = edge_effects_reference(model, task)
    fast = edge_effects(model, task)
    assert fast.graph.n_edges == len(ref) and not any(r.kind == "mlp" for r in fast.graph.readers)
    assert float((fast.scores - ref).abs().max()) < 1e-5 and float(ref.abs().max()) > 1e-3


def test_bfloat16_within_tolerance(tiny_llama_bf16, tiny_llama, sharp):
    """In bfloat16 the engine and the reference round differently: they must agree to 3% of the
    largest effect, and both stay within 10% of it from the float32 numbers."""
    model = tiny_llama_bf16
    task = scrambled_task(model, 3, seed=2)
    ref = edge_effects_reference(model, task)
    fast = edge_effects(model, task).scores
    top = float(ref.abs().max())
    assert float((fast - ref).abs().max()) <= 0.03 * top, (float((fast - ref).abs().max()), top)
    exact32 = edge_effects(sharp("tiny_llama"), scrambled_task(tiny_llama, 3, seed=2)).scores
    assert float((fast - exact32).abs().max()) <= 0.1 * top


@pytest.mark.parametrize("component", ["q", "k", "v"])
def test_direct_path_patching_equals_transformer_lens(tiny_gpt2, sharp, component):
    """TL's get_act_patch_direct_path_all_sources adds a source head's clean-minus-corrupted write to a
    later head's q/k/v input on the corrupted run: our head -> head edges on the swapped task."""
    from transformer_lens.patching import get_act_patch_direct_path_all_sources

    model = sharp("tiny_gpt2")
    task = scrambled_task(model, 3, seed=5)
    metric = metric_fn(task)
    z = [f"blocks.{layer}.attn.hook_z" for layer in range(model.info.n_layers)]
    _, clean = model.run_with_cache(task.clean, names_filter=lambda n: n in z)
    _, corr = model.run_with_cache(task.corrupted, names_filter=lambda n: n in z)
    tl = get_act_patch_direct_path_all_sources(model.bridge, task.corrupted, dict(clean.items()), dict(corr.items()),
                                               lambda lg: metric(end_logits(lg, task.end)).mean(), component=component,
                                               verbose=False)  # fmt: skip
    graph = EdgePatcher(model, task).graph
    sel = [i for i, e in enumerate(graph.edges()) if e.src.kind == "head" and e.dst.kind == component]
    ours = edge_effects(model, task.swapped(), sel)
    with torch.no_grad():
        base = float(metric(end_logits(model(task.corrupted), task.end)).mean())
    got = torch.tensor([base - float(ours.scores[i]) for i in sel])
    want = torch.tensor([float(tl[e.src.layer, e.src.head, e.dst.layer, e.dst.head]) for e in map(graph.edge, sel)])
    err, effect = float((got - want).abs().max()), float((want - base).abs().max())
    assert err < 1e-6 and effect > 1e-5 and err < 0.05 * effect, (err, effect)
    assert torch.isnan(ours.scores).sum() == graph.n_edges - len(sel)


def test_bad_edges(tiny_llama):
    task = scrambled_task(tiny_llama, 2, seed=0)
    with pytest.raises(WorkbenchError, match="edge indices"):
        edge_effects(tiny_llama, task, [10_000])
