"""Helpers for the circuit tests: corruptions a tiny random model reacts to."""

from __future__ import annotations

from dataclasses import replace

import torch

from interp.data.ioi import make_ioi


def scrambled(model, n: int, seed: int):
    """IOI prompts (a Task) whose 'corrupted' run reads random tokens: a tiny random model barely
    reacts to swapped names, and the comparisons need effects well above float noise."""
    task = make_ioi(model, n, seed=seed)
    g = torch.Generator().manual_seed(seed)
    noise = torch.randint(100, 5000, task.clean.shape, generator=g)
    return replace(task, corrupted=torch.cat([task.clean[:, :1], noise[:, 1:].to(task.clean.device)], dim=1))


def scrambled_task(model, n: int, seed: int):
    return scrambled(model, n, seed)


def sharpen_queries(model, request, factor: float = 16.0):
    """Multiply every layer's query weights by `factor` until the test ends (restored by a
    finalizer): freshly initialised attention is nearly uniform, so patching or keeping a head
    would barely move anything."""
    weights = [model.bridge.blocks[layer].attn.q.original_component.weight for layer in range(model.info.n_layers)]
    with torch.no_grad():
        for w in weights:
            w.mul_(factor)
    request.addfinalizer(lambda: [w.data.div_(factor) for w in weights])
    return model


def late_scrambled_task(model, n: int, seed: int, start: int):
    """`scrambled_task` with every prompt's first `start` tokens left clean: the clean and corrupted
    runs agree before `start`."""
    task = scrambled(model, n, seed)
    return replace(task, corrupted=torch.cat([task.clean[:, :start], task.corrupted[:, start:]], dim=1))


def logit_diff(logits, task):
    """Per-prompt logit(answer) - logit(distractor) at END of full logits [batch pos vocab] (the task's
    one metric definition, interp.data.task.metric)."""
    from interp.data.task import end_logits, metric_fn

    return metric_fn(task.with_metric("logit-diff"))(end_logits(logits, task.end))


def assert_eap_is_a_finite_difference(model, task, eap, edges, eps: float = 1e-2) -> None:
    """EAP(e) = -d/d(eps) m(clean, input v shifted by eps (a_corr(u) - a_clean(u))) at eps = 0 for each edge
    index in `edges`: central differences of the exact engine (interp.circuits.edges.EdgePatcher)."""
    from interp.circuits.edges import EdgePatcher

    patcher = EdgePatcher(model, task)
    g = patcher.graph
    for e in edges:
        reader, w = g.readers[int(g.dst[e])], int(g.src[e])
        d = patcher.delta[:, :, [w]].permute(2, 0, 1, 3)
        with torch.no_grad():
            up, down = patcher.reader_pass(reader, eps * d).mean(1), patcher.reader_pass(reader, -eps * d).mean(1)
        fd = float(-(up - down) / (2 * eps))
        assert abs(fd - float(eap.scores[e])) <= 0.02 * abs(fd) + 3e-5, (g.edge(e).name, fd, float(eap.scores[e]))
