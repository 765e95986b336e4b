"""Batched activation patching and batched mean-ablation against plain one-pass-per-case loops."""

from __future__ import annotations

import pytest
import torch
from circuit_helpers import logit_diff, sharpen_queries

from interp.circuits.activation import patch_heads, patch_resid
from interp.circuits.evaluate import abc_means, evaluate
from interp.circuits.head_configs import ablated_logit_diff, ablated_logit_diffs_reference
from interp.circuits.path import all_heads
from interp.circuits.types import Graph
from interp.data.ioi import NAMES, POSITION_NAMES, make_ioi
from interp.data.task import normalized


def _one(model, ds, name, fn):
    return logit_diff(model.run_with_hooks(ds.clean, fwd_hooks=[(name, fn)]), ds).mean()


def test_patch_heads_matches_one_pass_per_head(tiny_llama):
    model, ds = tiny_llama, make_ioi(tiny_llama, 4, seed=1)
    ds.corrupted = torch.cat([ds.clean[:, :1], torch.randint(100, 5000, ds.clean[:, 1:].shape)], 1)
    grid = patch_heads(model, ds, chunk=3)
    per_pos = patch_heads(model, ds, per_position=True, chunk=5)
    resid = patch_resid(model, ds, chunk=4)
    L = model.info.n_layers
    names = [f"blocks.{layer}.attn.hook_z" for layer in range(L)] + [
        f"blocks.{layer}.hook_resid_pre" for layer in range(L)
    ]
    _, corr = model.run_with_cache(ds.corrupted, names_filter=lambda n: n in names)
    clean = logit_diff(model(ds.clean), ds).mean()
    bad = logit_diff(model(ds.corrupted), ds).mean()
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
    means = abc_means(model, ds, n_abc=2)
    cfgs = torch.zeros(3, 2, 4, dtype=torch.bool)
    cfgs[1, 0, 1] = cfgs[1, 1, 3] = True
    cfgs[2] = True
    got = ablated_logit_diff(model, ds, means, cfgs)
    assert torch.allclose(got[0], logit_diff(model(ds.clean), ds).mean(), atol=1e-5)

    def ablate(layer, heads):
        def hook(z, hook):
            z = z.clone()
            z[:, :, heads] = means[layer][:, :, heads]
            return z

        return (f"blocks.{layer}.attn.hook_z", hook)

    plain = logit_diff(model.run_with_hooks(ds.clean, fwd_hooks=[ablate(0, [1]), ablate(1, [3])]), ds).mean()
    assert torch.allclose(got[1], plain, atol=1e-5)
    plain_all = logit_diff(
        model.run_with_hooks(ds.clean, fwd_hooks=[ablate(0, [0, 1, 2, 3]), ablate(1, [0, 1, 2, 3])]), ds
    )
    assert torch.allclose(got[2], plain_all.mean(), atol=1e-5)
    # the whole model as the "circuit": nothing is ablated, so faithfulness is exactly 1
    ev = evaluate(model, ds, {"everything": all_heads(model)}, checks=True, n_random=2, n_abc=2)
    assert abs(ev.faithfulness.value - 1.0) < 1e-5 and abs(ev.faithfulness.lo - 1.0) < 1e-5
    assert ev.completeness and all(abs(r["circuit"] - r["model"]) < 1e-5 for r in ev.completeness)
    assert set(ev.minimality) == {f"{a}.{b}" for a, b in all_heads(model)}


def test_abc_means_average_fresh_abc_prompts_of_each_template(tiny_llama):
    """Each prompt's mean is the mean of hook_z over n_abc ABC prompts of its base template (both
    orders), drawn from the prompts' own part (its templates and names), position by position."""
    model = tiny_llama
    ds = make_ioi(model, 5, seed=4, part="evaluation")
    means = abc_means(model, ds, n_abc=3, seed=11)
    used = sorted({t // 2 for t in ds.groups.tolist()})
    ids = [2 * b + (i % 2) for b in used for i in range(3)]
    ref = make_ioi(model, len(ids), seed=11, template_ids=ids, templates=ds.source["templates"], names=ds.source["names"])
    assert {n for p in ref.corrupted_prompts for n in p.replace(".", " ").replace(",", " ").split()} & set(NAMES) \
        <= set(ds.source["names"])  # ABC names from the evaluation half only
    _, cache = model.run_with_cache(ref.corrupted, names_filter=lambda n: n.endswith("hook_z"))
    for i in range(len(ds)):
        rows = [r for r, t in enumerate(ids) if t // 2 == int(ds.groups[i]) // 2]
        n = int(ds.lengths[i])
        for layer in range(model.info.n_layers):
            direct = cache[f"blocks.{layer}.attn.hook_z"][rows, :n].mean(0)
            torch.testing.assert_close(means[layer][i, :n], direct, atol=1e-5, rtol=1e-4)


CLASSES = {"name mover": [(1, 0), (1, 2)], "induction": [(0, 1)], "previous token": [(0, 3)], "extra": [(1, 3)]}


@pytest.fixture
def sharp_model(request):
    """A tiny model (dtype as asked) with 16x query weights, restored afterwards: freshly
    initialised attention is nearly uniform, so keeping a head at one position would barely
    move anything and a wrong replay window could hide."""

    def get(fixture: str, dtype: str):
        from interp import load

        model = request.getfixturevalue(fixture) if dtype == "float32" else \
            load(str(request.getfixturevalue(f"{fixture}_dir")), device="cpu", dtype=dtype)
        return sharpen_queries(model, request)

    return get


@pytest.mark.parametrize("fixture, dtype", [("tiny_llama", "float32"), ("tiny_gpt2", "float32"),
                                            ("tiny_llama", "bfloat16")])
def test_replayed_configurations_match_one_pass_each(fixture, dtype, sharp_model, monkeypatch):
    """The fast path (bases through the bridge, every other configuration replayed from its first
    differing layer and position) against one hooked forward pass of the whole model each."""
    import sys

    module = sys.modules["interp.circuits.evaluate"]
    model = sharp_model(fixture, dtype)
    ds = make_ioi(model, 6, seed=2, part="evaluation")
    means = abc_means(model, ds, n_abc=4)
    ranked = [(1, 2), (0, 1), (1, 3), (1, 0), (0, 3)]  # the faithfulness curve's "first k" rows
    index, configs, _ = module.configurations(model, ds, CLASSES, True, 2, 0, ranked, noise=[(0, 0), (1, 1)])
    assert {"first 1", "first 5", "C+r (0, 0)", "C+r (1, 1)"} <= set(index)
    assert index["first 5"] == index["circuit"]  # every head at its class's positions: the circuit itself
    base = index["circuit"]
    graph, (B, T) = Graph.of(model), ds.clean.shape
    plans = configs.plans(graph, T)
    windowed = torch.tensor([bool((p.first_difference(plans[base], graph, B, T)[1] > 0).all()) for p in plans])
    assert windowed.any() and not windowed.all()  # windowed replays and whole-sequence ones
    reference = ablated_logit_diffs_reference(model, ds, means, configs)
    monkeypatch.setattr(sys.modules["interp.circuits.ablate.reference"], "plan_reference",
                        lambda *a: pytest.fail("fell back to the reference"))  # fmt: skip
    fast = module.ablated_logit_diffs(model, ds, means, configs, bases=[index["model"], base], max_rows=12)
    atol = 1e-4 if dtype == "float32" else 2e-2
    torch.testing.assert_close(fast, reference, atol=atol, rtol=0)
    if dtype == "float32":
        # not vacuous: the windowed configurations move the logit diff far more than the two disagree
        assert (reference[windowed] - reference[base]).abs().max() > 30 * atol
        # each class is kept only at its positions: not the same as keeping it everywhere
        assert (reference[base] - reference[index["circuit, all positions"]]).abs().max() > 30 * atol


def test_evaluation_figures_carry_intervals(tiny_llama):
    ds = make_ioi(tiny_llama, 8, seed=3, part="evaluation")
    ev = evaluate(tiny_llama, ds, CLASSES, checks=True, n_random=2, n_abc=2, n_boot=200)
    for fig in (ev.model_logit_diff, ev.circuit_logit_diff, ev.faithfulness, ev.faithfulness_all_positions,
                ev.incompleteness):
        assert fig.lo <= fig.value <= fig.hi and fig.lo < fig.hi
    assert ev.faithfulness.value == pytest.approx(ev.circuit_logit_diff.value / ev.model_logit_diff.value)
    assert set(ev.templates) <= set(ds.source["templates"]) and ev.names == ds.source["names"] and ev.n_abc == 2
    for r in ev.completeness:
        assert r["gap_lo"] <= r["gap"] <= r["gap_hi"]
    for m in ev.minimality.values():
        assert m["passes"] == (m["lo"] >= ev.min_minimality)


@pytest.mark.parametrize("fixture", ["tiny_llama", "tiny_gpt2"])
def test_direct_effect_directions_read_the_logit_diff(fixture, request):
    """resid . d + the final norm's bias term + b_U's = the model's logit diff, prompt by prompt:
    the directions carry the run's own norm scale and the IO - S unembedding."""
    from interp.circuits.discover import logit_diff_directions

    model = request.getfixturevalue(fixture)
    ds = make_ioi(model, 5, seed=6)
    L = model.info.n_layers
    logits, cache = model.run_with_cache(ds.clean, names_filter=lambda n: n == f"blocks.{L - 1}.hook_resid_post")
    rows = torch.arange(len(ds))
    resid = cache[f"blocks.{L - 1}.hook_resid_post"][rows, ds.positions["END"]]
    d = logit_diff_directions(model, ds, resid)
    u = (model.bridge.W_U[:, ds.answers] - model.bridge.W_U[:, ds.distractors]).T
    ln = model.bridge.ln_final
    bias = getattr(ln, "b", None)
    if bias is None:
        bias = getattr(ln, "bias", None)
    const = (u @ bias) if bias is not None else 0.0
    b_U = getattr(model.bridge, "b_U", None)
    if b_U is not None:
        const = const + b_U[ds.answers] - b_U[ds.distractors]
    torch.testing.assert_close((resid * d).sum(-1) + const, logit_diff(logits, ds), atol=1e-4, rtol=1e-4)


def test_activation_patching_takes_any_task(tiny_llama, tmp_path):
    """The same numbers for IOI's task and the same pairs read from a task file; a task's own named
    positions label the axis."""
    import json

    from interp.data.tasks import load_task, read_jsonl

    ds = make_ioi(tiny_llama, 3, seed=1, corruption="s2-io")
    rows = [{"clean": c, "corrupted": x, "answer": tiny_llama.tokenizer.decode([int(a)]),
             "distractor": tiny_llama.tokenizer.decode([int(d)])}
            for c, x, a, d in zip(ds.prompts, ds.corrupted_prompts, ds.answers, ds.distractors)]  # fmt: skip
    (tmp_path / "pairs.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    both = read_jsonl(tmp_path / "pairs.jsonl", tiny_llama, 2, 1, seed=0)
    order = [ds.prompts.index(p) for p in both.score.prompts + both.heldout.prompts]
    grid = patch_heads(tiny_llama, ds.subset(order[:2]), chunk=4)
    assert torch.allclose(grid, patch_heads(tiny_llama, both.score, chunk=4), atol=1e-6)
    assert float(grid.abs().max()) > 1e-4
    task = load_task("induction", tiny_llama, 3, 1, seed=0).score
    per_pos = patch_heads(tiny_llama, task, per_position=True, chunk=5)
    assert per_pos.shape == (2, 4, len(task.positions)) and list(task.positions) == ["END", "prev", "next"]
    resid = patch_resid(tiny_llama, task)
    # END reads the same token in both runs; the first half (where "prev" lies) was resampled
    assert abs(float(resid[0, 0])) < 1e-5 and abs(float(resid[0, 1])) > 1e-4
