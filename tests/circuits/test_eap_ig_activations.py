"""EAP-IG over activations (MIB's EAP-IG-activations): the stacked, pulled-back scores held to a plainly
written loop -- one hooked forward+backward per (component, step) with autograd at every input's own
copy of the residual stream -- and to themselves under any batching."""

from __future__ import annotations

import pytest
import torch
from circuit_helpers import scrambled_task

from interp import hooks
from interp.bridge import split_inputs
from interp.circuits.attribute import components
from interp.circuits.capture import layer_inputs, writer_outputs
from interp.circuits.methods import Options, get, score_edges
from interp.circuits.types import Graph
from interp.data.task import end_logits, metric_fn
from interp.errors import WorkbenchError


def _reference(model, task, steps: int) -> torch.Tensor:
    """score(u -> v) = (a_clean(u) - a_corr(u)) . mean over components c and k = 1..steps of the
    gradient at v's own copy of the residual stream, with c's output set (a constant) to
    corrupted + k/steps (clean - corrupted); one run per (c, k), one prompt batch, no stacking."""
    graph = Graph.of(model)
    _, a_clean = writer_outputs(model, task.clean, graph)
    _, a_corr = writer_outputs(model, task.corrupted, graph)
    D = (a_clean - a_corr).float()  # [batch pos writer d]
    sites = {("embed", None): hooks.name("resid_pre", 0)}
    for layer in range(graph.n_layers):
        sites[("attn", layer)] = hooks.name("z", layer)
        sites[("mlp", layer)] = hooks.name("mlp_out", layer)
    names = list(sites.values())
    clean = hooks.capture(model, task.clean, names, last=names[-1])
    corr = hooks.capture(model, task.corrupted, names, last=names[-1])
    with torch.no_grad():
        clean_end = end_logits(model.bridge(task.clean), task.end)
    metric = metric_fn(task, clean_end)
    inputs = layer_inputs(graph)
    total = torch.zeros(len(graph.readers), len(graph.writers))
    runs = 0
    for comp in components(graph):
        site = sites[comp]
        for k in range(1, steps + 1):
            alpha = k / steps
            value = (corr[site] + alpha * (clean[site] - corr[site])).detach()
            copies: dict[str, torch.Tensor] = {}

            def grab(name, copies=copies):
                def hook(x, hook=None):
                    y = x.view_as(x)
                    copies[name] = y
                    return y

                return hook

            leaf = lambda x, hook=None: x.detach().requires_grad_(True)  # what the readers' gradients flow from
            fwd = [(hooks.name("resid_pre", 0), leaf), (site, lambda x, hook=None, v=value: v.clone().requires_grad_(True))]
            fwd += [(r.hook, grab(r.hook)) for r, _ in inputs]
            with split_inputs(model), torch.enable_grad():
                logits = model.run_with_hooks(task.clean, fwd_hooks=fwd)
                m = metric(end_logits(logits, task.end)).mean()
                grads = torch.autograd.grad(m, [copies[r.hook] for r, _ in inputs], allow_unused=True)
            for (reader, idx), g in zip(inputs, grads):
                if g is None:
                    continue
                g = g.float() if g.dim() == 4 else g.float()[:, :, None]  # [batch pos n d]
                for j, r in enumerate(idx.tolist()):
                    n = graph.n_writers_before(graph.readers[r])
                    total[r, :n] += torch.einsum("bpwd,bpd->w", D[:, :, :n], g[:, :, j])
            runs += 1
    return total[graph.dst, graph.src] / runs


@pytest.mark.parametrize("fixture", ["tiny_llama", "tiny_gpt2"])
def test_eap_ig_activations_equals_the_plain_loop(fixture, sharp):
    model = sharp(fixture)
    task = scrambled_task(model, 3, seed=6)
    fast = score_edges(model, task, "eap-ig-act", steps=3)
    slow = _reference(model, task, 3)
    assert float(slow.abs().max()) > 1e-3
    assert torch.allclose(fast.scores, slow, atol=2e-6, rtol=1e-4), float((fast.scores - slow).abs().max())
    assert fast.method == "eap-ig-act" and fast.steps == 3


def test_batching_does_not_change_the_scores(tiny_llama, sharp):
    """All (component, step) runs of all prompts in one pass, a few a pass, one a pass with uneven chunks."""
    model = sharp("tiny_llama")
    task = scrambled_task(model, 3, seed=7)
    one = score_edges(model, task, "eap-ig-act", steps=2, batch_size=3)
    for rows in (1000, 7, 2):
        got = score_edges(model, task, "eap-ig-act", steps=2, batch_size=rows)
        assert torch.allclose(got.scores, one.scores, atol=1e-6, rtol=1e-4), rows
        assert (got.clean_metric, got.corrupted_metric) == pytest.approx((one.clean_metric, one.corrupted_metric), abs=1e-5)


def test_differs_from_eap_ig_over_inputs_and_bad_input(tiny_llama, sharp):
    model = sharp("tiny_llama")
    task = scrambled_task(model, 2, seed=8)
    act = score_edges(model, task, "eap-ig-act", steps=2)
    inp = score_edges(model, task, "eap-ig", steps=2)
    assert not torch.allclose(act.scores, inp.scores, atol=1e-4)
    g = act.graph
    assert get("eap-ig-act").forwards(Options(steps=2), 10, g) == 10 * (2 + 3 * 2 * 5)  # 5 components: embed, 2 x (attn, mlp)
    with pytest.raises(WorkbenchError, match="at least 1 step"):
        score_edges(model, task, "eap-ig-act", steps=0)
