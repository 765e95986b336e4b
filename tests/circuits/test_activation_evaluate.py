"""Batched activation patching and batched mean-ablation against plain one-pass-per-case loops."""

from __future__ import annotations

import torch

from interp.circuits.activation import patch_heads, patch_resid
from interp.circuits.evaluate import abc_means, ablated_logit_diff, evaluate
from interp.circuits.metrics import logit_diff, normalized
from interp.circuits.path import all_heads
from interp.data.ioi import POSITION_NAMES, make_ioi


def _one(model, ds, name, fn):
    return logit_diff(model.run_with_hooks(ds.tokens, fwd_hooks=[(name, fn)]), ds).mean()


def test_patch_heads_matches_one_pass_per_head(tiny_llama):
    model, ds = tiny_llama, make_ioi(tiny_llama, 4, seed=1)
    ds.corrupted_tokens = torch.cat([ds.tokens[:, :1], torch.randint(100, 5000, ds.tokens[:, 1:].shape)], 1)
    grid = patch_heads(model, ds, chunk=3)
    per_pos = patch_heads(model, ds, per_position=True, chunk=5)
    resid = patch_resid(model, ds, chunk=4)
    L = model.info.n_layers
    names = [f"blocks.{layer}.attn.hook_z" for layer in range(L)] + [
        f"blocks.{layer}.hook_resid_pre" for layer in range(L)
    ]
    _, corr = model.run_with_cache(ds.corrupted_tokens, names_filter=lambda n: n in names)
    clean = logit_diff(model(ds.tokens), ds).mean()
    bad = logit_diff(model(ds.corrupted_tokens), ds).mean()
    rows = torch.arange(len(ds))
    for layer, h in all_heads(model):
        name = f"blocks.{layer}.attn.hook_z"

        def every(z, hook):
            z = z.clone()
            z[:, :, h] = corr[name][:, :, h]
            return z

        assert torch.allclose(grid[layer, h], normalized(_one(model, ds, name, every), clean, bad), atol=1e-4)
        p = ds.positions["S2"]

        def at_s2(z, hook):
            z = z.clone()
            z[rows, p, h] = corr[name][rows, p, h]
            return z

        got = per_pos[layer, h, POSITION_NAMES.index("S2")]
        assert torch.allclose(got, normalized(_one(model, ds, name, at_s2), clean, bad), atol=1e-4)
    name, p = "blocks.1.hook_resid_pre", ds.positions["END"]

    def end(x, hook):
        x = x.clone()
        x[rows, p] = corr[name][rows, p]
        return x

    assert torch.allclose(
        resid[1, POSITION_NAMES.index("END")], normalized(_one(model, ds, name, end), clean, bad), atol=1e-4
    )
    assert grid.abs().max() > 1e-3  # something moved


def test_mean_ablation_matches_plain_hooks_and_full_circuit_is_faithful(tiny_gpt2):
    model, ds = tiny_gpt2, make_ioi(tiny_gpt2, 6, seed=2)
    means = abc_means(model, ds, per_template=2)
    cfgs = torch.zeros(3, 2, 4, dtype=torch.bool)
    cfgs[1, 0, 1] = cfgs[1, 1, 3] = True
    cfgs[2] = True
    got = ablated_logit_diff(model, ds, means, cfgs, chunk=2)
    assert torch.allclose(got[0], logit_diff(model(ds.tokens), ds).mean(), atol=1e-5)

    def ablate(layer, heads):
        def hook(z, hook):
            z = z.clone()
            z[:, :, heads] = means[layer][:, :, heads]
            return z

        return (f"blocks.{layer}.attn.hook_z", hook)

    plain = logit_diff(model.run_with_hooks(ds.tokens, fwd_hooks=[ablate(0, [1]), ablate(1, [3])]), ds).mean()
    assert torch.allclose(got[1], plain, atol=1e-5)
    plain_all = logit_diff(
        model.run_with_hooks(ds.tokens, fwd_hooks=[ablate(0, [0, 1, 2, 3]), ablate(1, [0, 1, 2, 3])]), ds
    )
    assert torch.allclose(got[2], plain_all.mean(), atol=1e-5)
    # the whole model as the "circuit": nothing is ablated, so faithfulness is exactly 1
    ev = evaluate(model, ds, {"everything": all_heads(model)}, checks=True, n_random=2)
    assert abs(ev.faithfulness - 1.0) < 1e-5
    assert ev.completeness and all(abs(r["circuit"] - r["model"]) < 1e-5 for r in ev.completeness)
    assert set(ev.minimality) == {f"{a}.{b}" for a, b in all_heads(model)}


def test_activation_patching_takes_any_task(tiny_llama):
    """The same numbers for an IOIDataset and its Task; a task's own named positions label the axis."""
    from interp.data.tasks import from_ioi, load_task

    ds = make_ioi(tiny_llama, 3, seed=1)
    ds.corrupted_tokens = torch.cat([ds.tokens[:, :1], torch.randint(100, 5000, ds.tokens[:, 1:].shape)], 1)
    assert torch.equal(patch_heads(tiny_llama, ds, chunk=4), patch_heads(tiny_llama, from_ioi(ds), chunk=4))
    task = load_task("induction", tiny_llama, 3, 1, seed=0).score
    per_pos = patch_heads(tiny_llama, task, per_position=True, chunk=5)
    assert per_pos.shape == (2, 4, len(task.positions)) and list(task.positions) == ["END", "prev", "next"]
    resid = patch_resid(tiny_llama, task)
    # END reads the same token in both runs; the first half (where "prev" lies) was resampled
    assert abs(float(resid[0, 0])) < 1e-5 and abs(float(resid[0, 1])) > 1e-4
