"""Edge circuits: what EAP-IG, the faithfulness curve and exact edge patching cost, side by side.

Four measurements, each against a baseline timed in the same run (interleaved, best of --repeats;
wall time and this process's CPU time are both printed, CPU time being the steadier of the two on
a shared machine):

1. EAP-IG with m steps on --model (IOI, --n-prompts prompts, one batch) against one forward +
   one backward of the same batch (the backward to the input embeddings: activation gradients,
   no weight gradients). Goal: <= 1.5 x m x (forward + backward). The steps are stacked along
   the batch (m x prompts rows in one forward+backward); one step a pass and EAP are timed
   against the same baseline; --ops counts aten operators too (a proxy for GPU launches).
2. The whole faithfulness curve (MIB's 10 sizes, counterfactual ablation, pruned top-n) on the
   held-out batch (IOI's default counterfactual, S2 -> IO; --corruption abc for Wang et al.'s)
   against one plain forward of that batch. Goal: <= 12 forwards.
3. On an MHA GPT-2-shaped model built here (random weights, GPT-2's tokenizer; --tl-shape):
   every head -> head q edge patched exactly (`edge_effects` on the swapped task, i.e. direct
   path patching) against TransformerLens 4.3's `get_act_patch_direct_path_all_sources(
   component="q")`, which runs one forward per (source, destination) pair; TL is timed on
   --tl-sources source heads and scaled by its forward count to all of them. Results must be
   equal (max |diff| printed). Goal: >= 20x.
4. On the same model: our EAP (gradient at the corrupted run) against TL's `attribution_patch`
   at edge granularity (equal once TL's per-position edges are summed), and the batched exact
   engine against the plain one-forward-per-edge reference.
5. `interp circuit`'s exact check (--exact-top edges: the top half by |score|, a quarter at random, a
   quarter from the bottom half) on --model's IOI scoring prompts: on the ablation engine (one
   counterfactual plan per edge, interp.circuits.exact_check) against the EdgePatcher it replaced
   (interp.circuits.edges.edge_effects: its setup, its null check of every input kind and layer, the
   edges), stage by stage, with the largest difference; and the random baseline (--random-draws draws
   of MIB's sizes) against the |score| curve on the held-out prompts.

    .venv/bin/python benchmarks/circuits.py [--device cpu|cuda] [--model smollm2-135m] [--dtype float32]
        [--n-prompts 16] [--steps 5] [--repeats 2] [--tl-shape small|gpt2] [--tl-sources 8] [--skip 1,2,3,4,5] [--ops]
        [--exact-top 20] [--random-draws 3]
"""

from __future__ import annotations

import argparse
import random
import resource
import tempfile
import time
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from interp import hooks, load
from interp.circuits.methods import score_edges as attribute
from interp.circuits.edges import edge_effects, edge_effects_reference
from interp.circuits.faithfulness import faithfulness_curve
from interp.circuits.types import Graph
from interp.data.tasks import end_logits, load_task, metric_fn

SHAPES = {"small": dict(n_layer=6, n_embd=256, n_head=8), "gpt2": dict(n_layer=12, n_embd=768, n_head=12)}


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, device: str) -> tuple[float, float]:
    sync(device)
    w, c = time.perf_counter(), time.process_time()
    fn()
    sync(device)
    return time.perf_counter() - w, time.process_time() - c


def best(pairs: list[tuple[float, float]]) -> tuple[float, float]:
    return min(p[0] for p in pairs), min(p[1] for p in pairs)


def peak() -> str:
    if torch.cuda.is_available() and torch.cuda.max_memory_allocated():
        return f"peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB"
    return f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB"


def interleave(fns: dict, repeats: int, device: str) -> dict[str, tuple[float, float]]:
    got = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            got[k].append(timed(fn, device))
    return {k: best(v) for k, v in got.items()}


def forward_backward(model, task):
    """One forward and one backward of the metric to the input embeddings (no weight gradients)."""
    metric = metric_fn(task)
    got = {}

    def leaf(x, hook=None):
        got["x"] = x.detach().requires_grad_(True)
        return got["x"]

    def run():
        with torch.enable_grad():
            logits = model.run_with_hooks(task.clean, fwd_hooks=[(hooks.name("resid_pre", 0), leaf)])
            torch.autograd.grad(metric(end_logits(logits, task.end)).mean(), [got["x"]])

    return run


def random_task(model, batch: int, seq: int, seed: int = 0):
    """`batch` random clean/corrupted pairs of `seq` tokens (BOS first), random answer and distractor,
    logit difference at the last position: a workload of a given shape for any model."""
    from interp.data.tasks import Task

    g = torch.Generator().manual_seed(seed)
    V = model.info.d_vocab
    bos = model.tokenizer.bos_token_id if model.tokenizer.bos_token_id is not None else 0
    clean, corrupted = (torch.randint(V, (batch, seq), generator=g) for _ in range(2))
    clean[:, 0] = corrupted[:, 0] = bos
    answers, distractors = (torch.randint(V, (batch,), generator=g) for _ in range(2))
    dev = model.device
    return Task("random", clean.to(dev), corrupted.to(dev), torch.full((batch,), seq - 1), answers, distractors, "logit-diff")


def eap_ig_workload(model, batch: int = 16, seq: int = 32, steps: int = 5, device=None, repeats: int = 2) -> dict:
    """EAP-IG (`steps` steps stacked, the whole batch at once) on `batch` random pairs of `seq` tokens against
    `steps` x (one forward + one backward to the input embeddings) of the same batch, timed
    interleaved, best of `repeats`. Returns {"time_s", "baseline_s", "ratio", "peak_bytes"}: baseline_s
    is already multiplied by `steps`; peak_bytes is the device's high-water mark during EAP-IG (CUDA:
    torch.cuda.max_memory_allocated, weights included) or, on the CPU, the process's peak RSS.
    The issue's goal: ratio <= 1.5."""
    device = str(device or model.device)
    task = random_task(model, batch, seq)
    fb = forward_backward(model, task)
    fb()  # warm-up
    attribute(model, task, "eap-ig", steps=1, batch_size=batch)
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t = interleave({"fb": fb, "eap-ig": lambda: attribute(model, task, "eap-ig", steps=steps, batch_size=steps * batch)},
                   repeats, device)  # fmt: skip
    if cuda:
        peak_bytes = int(torch.cuda.max_memory_allocated())
    else:
        peak_bytes = int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    time_s, baseline_s = t["eap-ig"][0], steps * t["fb"][0]
    return {"time_s": time_s, "baseline_s": baseline_s, "ratio": time_s / baseline_s, "peak_bytes": peak_bytes}


def peak_of(fn, device: str) -> str:
    """The device's high-water mark over one untimed run of fn (CUDA: allocated bytes, weights
    included), or '' on the CPU (the process's peak RSS is printed at the end)."""
    if not device.startswith("cuda"):
        return ""
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return f"   peak {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB"


# aten operators that launch no kernel of their own (views, metadata, wrappers around other operators)
NO_KERNEL = {
    "view", "as_strided", "reshape", "slice", "unsqueeze", "squeeze", "permute", "transpose", "t", "expand",
    "expand_as", "detach", "select", "narrow", "_unsafe_view", "_reshape_alias", "resolve_conj", "resolve_neg",
    "empty", "empty_strided", "empty_like", "lift_fresh", "numpy_T", "view_as", "alias", "split", "split_with_sizes",
    "chunk", "unbind", "result_type", "to", "linear", "matmul", "contiguous", "_to_copy", "clone", "einsum",
    "flatten", "unflatten", "repeat", "type_as", "dropout",
}


def aten_ops(fn) -> int:
    """How many kernel-launching aten operators one run of fn calls (torch.profiler on the CPU; leaf
    operators, views and wrappers left out): a proxy for what a launch-bound GPU pays for."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return sum(1 for e in prof.events() if e.name.startswith("aten::") and e.name[6:] not in NO_KERNEL
               and not any(c.name.startswith("aten::") for c in e.cpu_children))  # fmt: skip


def bench_attribution(model, split, args) -> None:
    """EAP-IG with its m steps stacked along the batch (m x prompts rows per forward+backward), and one
    step per pass (batch_size = the prompts), against m x (forward + backward) of the prompt batch."""
    task, m = split.score, args.steps
    forward_backward(model, task)()  # warm-up
    attribute(model, task, "eap", batch_size=len(task))
    runs = {"fb": forward_backward(model, task),
            "eap-ig": lambda: attribute(model, task, "eap-ig", steps=m, batch_size=m * len(task)),
            "eap-ig/1": lambda: attribute(model, task, "eap-ig", steps=m, batch_size=len(task)),
            "eap": lambda: attribute(model, task, "eap", batch_size=len(task))}  # fmt: skip
    t = interleave(runs, args.repeats, args.device)
    fb = t["fb"]
    ops = {k: aten_ops(fn) for k, fn in runs.items()} if args.ops else {}
    for k, what in (("eap-ig", "steps stacked"), ("eap-ig/1", "1 step a pass"), ("eap", "1 step")):
        steps = 1 if k == "eap" else m
        wall, cpu = t[k][0] / (steps * fb[0]), t[k][1] / (steps * fb[1])
        count = f"   aten ops {ops[k]} = {ops[k] / (steps * ops['fb']):.2f} x steps x (fwd+bwd)" if ops else ""
        print(f"1. {k:<8} ({steps} x {what}): {t[k][0]:7.2f}s wall  {t[k][1]:7.2f}s cpu   "
              f"forward+backward {fb[0]:.3f}s / {fb[1]:.3f}s   -> {wall:.2f} / {cpu:.2f} x steps x (fwd+bwd)"
              + ("   (goal <= 1.5)" if k == "eap-ig" else "") + count + peak_of(runs[k], args.device))  # fmt: skip
    print(f"   forward+backward of {len(task)} prompts{peak_of(runs['fb'], args.device)}"
          + (f"   aten ops {ops['fb']}" if ops else ""))  # fmt: skip


class OpCount(TorchDispatchMode):
    """Counts the aten ops that launch a kernel on an accelerator (every op but views, allocations
    and detach), leaving out those run inside the functions in `host` (the CPU structure code, which
    never touches the device), and the device-to-host reads (`syncs`)."""

    FREE = {"empty", "empty_strided", "empty_like", "detach", "lift_fresh", "alias", "_unsafe_view", "_local_scalar_dense"}

    def __init__(self, host=()):
        super().__init__()
        self.ops = self.syncs = self.depth = 0
        self.host = host

    def __enter__(self):
        self.saved = []
        for owner, name in self.host:
            fn = getattr(owner, name)
            self.saved.append((owner, name, fn))
            setattr(owner, name, self._quiet(fn))
        return super().__enter__()

    def __exit__(self, *exc):
        for owner, name, fn in self.saved:
            setattr(owner, name, fn)
        return super().__exit__(*exc)

    def _quiet(self, fn):
        def wrapped(*a, **k):
            self.depth += 1
            try:
                return fn(*a, **k)
            finally:
                self.depth -= 1

        return wrapped

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if not self.depth:
            name = func.overloadpacket.__name__
            self.syncs += name == "_local_scalar_dense"
            self.ops += not (func.is_view or name in self.FREE)
        return func(*args, **(kwargs or {}))


def curve_ops(model, held, keeps, graph, stacked: bool) -> tuple[int, int]:
    """(device ops, device-to-host reads) of a whole curve's ablation work: the Ablator's reference
    run and every size's forward (the bootstrap runs on the CPU)."""
    from interp.circuits import ablate
    from interp.circuits.ablate import edges, plan

    host = [(edges, "structure"), (ablate.Ablator, "groups"), (plan.AblationPlan, "__post_init__")]
    with OpCount(host) as c:
        ablate.Ablator(model, held, graph=graph).run_many(keeps, stacked=stacked, max_rows=1 << 30)
    return c.ops, c.syncs


def bench_curve(model, split, args) -> None:
    from interp.circuits.faithfulness import circuits_at

    scores = attribute(model, split.score, "eap-ig", steps=args.steps, batch_size=len(split.score))
    held = split.heldout

    def fwd():
        with torch.no_grad():
            model(held.clean)

    fwd()
    cuda = args.device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t = interleave({"fwd": fwd, "curve": lambda: faithfulness_curve(model, scores, held, n_boot=200)}, args.repeats, args.device)
    mem = f"peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB" if cuda else peak()
    c = faithfulness_curve(model, scores, held, n_boot=200)
    how = "stacked" if model.device.type != "cpu" else "one forward per size"
    print(f"2. faithfulness curve (10 sizes, {len(held)} held-out prompts, {how}): {t['curve'][0]:.2f}s wall  "
          f"{t['curve'][1]:.2f}s cpu   forward {t['fwd'][0]:.2f}s / {t['fwd'][1]:.2f}s   -> {t['curve'][0] / t['fwd'][0]:.1f} / "
          f"{t['curve'][1] / t['fwd'][1]:.1f} forwards (goal <= 12); {mem} during the curve")  # fmt: skip
    if model.device.type != "cpu":  # the per-size way, timed in the same run, for comparison
        t2 = interleave({"fwd": fwd, "curve": lambda: faithfulness_curve(model, scores, held, n_boot=200, stacked=False)},
                        args.repeats, args.device)  # fmt: skip
        print(f"   one forward per size instead: {t2['curve'][0]:.2f}s wall -> {t2['curve'][0] / t2['fwd'][0]:.1f} forwards")
    print("   f:", " ".join(f"{p:g}%={f:.2f}" for p, f in zip(c.percents, c.faithfulness)), f"  CPR {c.cpr:.3f} CMD {c.cmd:.3f}")
    # the GPU proxy: kernel-launching ops of the curve against those of one plain forward
    with OpCount() as one:
        fwd()
    keeps = [k for _, k in circuits_at(scores)]
    for stacked in (True, False):
        ops, syncs = curve_ops(model, held, keeps, scores.graph, stacked)
        print(f"   device ops, {'stacked' if stacked else 'per size'}: {ops} for the curve, {one.ops} per plain forward -> "
              f"{ops / one.ops:.2f} forwards' worth of kernels; {syncs} device-to-host reads")  # fmt: skip


def bench_exact_check(model, split, args) -> None:
    """Section 5 (see the module docstring): one run each (the old way takes minutes on a CPU)."""
    from interp.circuits.ablate import Ablator
    from interp.circuits.edges import EdgePatcher
    from interp.circuits.exact_check import checked_edges, exact_effects
    from interp.circuits.faithfulness import random_baseline

    task = split.score
    scores = attribute(model, task, "eap-ig", steps=args.steps, batch_size=len(task) * args.steps)
    idx = torch.tensor([i for i, _ in checked_edges(scores, args.exact_top, seed=0)])
    out = {}
    t_new = timed(lambda: out.__setitem__("new", exact_effects(model, task, idx)), args.device)
    stages = {}
    t_setup = timed(lambda: stages.__setitem__("p", EdgePatcher(model, task)), args.device)
    t_null = timed(lambda: stages["p"].check_null(), args.device)
    t_edges = timed(lambda: out.__setitem__("old", stages["p"].effects(idx)), args.device)
    old = sum(t[0] for t in (t_setup, t_null, t_edges)), sum(t[1] for t in (t_setup, t_null, t_edges))
    diff = float((out["new"] - out["old"]).abs().max())
    print(f"5. exact check of {len(idx)} edges on {len(task)} scoring prompts: ablation engine {t_new[0]:.1f}s wall "
          f"{t_new[1]:.1f}s cpu; EdgePatcher {old[0]:.1f}s wall {old[1]:.1f}s cpu (setup {t_setup[0]:.1f}s, null check "
          f"{t_null[0]:.1f}s, edges {t_edges[0]:.1f}s) -> {old[0] / t_new[0]:.1f}x wall / {old[1] / t_new[1]:.1f}x cpu; "
          f"max |diff| {diff:.2e}")  # fmt: skip
    held = split.heldout
    ab = Ablator(model, held, "counterfactual", task, scores.graph)
    t_curve = timed(lambda: faithfulness_curve(model, scores, held, n_boot=200, ablator=ab), args.device)
    got = {}
    t_rand = timed(lambda: got.__setitem__("r", random_baseline(model, scores.graph, held, args.random_draws, ablator=ab)),
                   args.device)  # fmt: skip
    r = got["r"]
    f, lo, hi = r.at(5.0)
    print(f"   random baseline ({r.draws} draws x 10 sizes, {len(held)} held-out prompts): {t_rand[0]:.1f}s wall "
          f"{t_rand[1]:.1f}s cpu against {t_curve[0]:.1f}s / {t_curve[1]:.1f}s for the |score| curve; f at 5% "
          f"{f:.3f} ({lo:.3f} to {hi:.3f}), CPR {r.area('cpr').value:.3f}, CMD {r.area('cmd').value:.3f}; edges after "
          f"pruning per draw: {r.n_edges}")  # fmt: skip


def mha_model(shape: str, device: str, dtype: str | None):
    from transformers import GPT2Config, GPT2LMHeadModel

    from interp.models.tokenizers import gpt2_tokenizer

    tok = gpt2_tokenizer()
    torch.manual_seed(0)
    cfg = GPT2Config(**SHAPES[shape], vocab_size=len(tok), n_positions=128)
    folder = Path(tempfile.mkdtemp(prefix="bench-mha-"))
    GPT2LMHeadModel(cfg).eval().save_pretrained(folder)
    tok.save_pretrained(folder)
    model = load(str(folder), device=device, dtype=dtype)
    with torch.no_grad():  # sharper attention than a fresh init, so patched queries move the metric
        for block in model.bridge.blocks:
            block.attn.q.original_component.weight.mul_(8.0)
    return model


def bench_tl(args) -> None:
    from transformer_lens.patching import get_act_patch_direct_path, get_act_patch_direct_path_all_sources
    from transformer_lens.tools.analysis.attribution_patching import EdgeAttributionConfig, attribution_patch

    model = mha_model(args.tl_shape, args.device, args.dtype)
    info = model.info
    L, H = info.n_layers, info.n_heads
    task = load_task("ioi", model, args.tl_prompts, 2, seed=0).score
    gen = torch.Generator().manual_seed(1)
    noise = torch.randint(1000, 20000, task.clean.shape, generator=gen).to(task.clean.device)
    task.corrupted = torch.cat([task.clean[:, :1], noise[:, 1:]], 1)  # a corruption a random model reacts to
    graph = Graph.of(model)
    metric = metric_fn(task)
    z = [hooks.name("z", layer) for layer in range(L)]
    _, cc = model.run_with_cache(task.clean, names_filter=lambda n: n in z)
    _, xc = model.run_with_cache(task.corrupted, names_filter=lambda n: n in z)
    clean_cache, corr_cache = dict(cc.items()), dict(xc.items())

    def patching_metric(logits):
        return metric(end_logits(logits, task.end)).mean()

    sel = [i for i, e in enumerate(graph.edges()) if e.src.kind == "head" and e.dst.kind == "q"]
    swapped = task.swapped()
    edge_effects(model, swapped, sel[:H], check=False)  # warm-up
    t_ours = best([timed(lambda: edge_effects(model, swapped, sel), args.device) for _ in range(args.repeats)])
    ours = edge_effects(model, swapped, sel)
    # TL on a sample of sources, scaled by forward count (one forward per (source, later head) pair)
    sources = sorted(random.Random(0).sample([(a, b) for a in range(L - 1) for b in range(H)], args.tl_sources))
    fwd_sample = sum(H * (L - 1 - a) for a, _ in sources)
    fwd_all = sum(H * (L - 1 - a) for a in range(L) for _ in range(H))

    def tl_sample():
        return {s: get_act_patch_direct_path(model.bridge, task.corrupted, clean_cache, corr_cache, patching_metric,
                                             s[0], s[1], component="q", verbose=False) for s in sources}  # fmt: skip

    t_tl = best([timed(tl_sample, args.device) for _ in range(args.repeats)])
    got = tl_sample()
    with torch.no_grad():
        base = float(patching_metric(model(task.corrupted)))
    err, effect = 0.0, 0.0
    for i in sel:
        e = graph.edge(i)
        if (e.src.layer, e.src.head) in got:
            tl = float(got[(e.src.layer, e.src.head)][e.dst.layer, e.dst.head])
            err = max(err, abs((base - float(ours.scores[i])) - tl))
            effect = max(effect, abs(float(ours.scores[i])))
    scale = fwd_all / fwd_sample
    print(f"3. direct path patching, every head -> every later head's q ({len(sel)} edges, {args.tl_shape} MHA model, "
          f"{L}x{H} heads, {len(task)} prompts):")
    print(f"   ours (edge_effects on the swapped task) {t_ours[0]:.2f}s wall {t_ours[1]:.2f}s cpu; TL all_sources "
          f"{t_tl[0] * scale:.2f}s / {t_tl[1] * scale:.2f}s (measured on {len(sources)} sources = {fwd_sample} of "
          f"{fwd_all} forwards, scaled)  -> {t_tl[0] * scale / t_ours[0]:.1f}x wall / {t_tl[1] * scale / t_ours[1]:.1f}x cpu "
          f"(goal >= 20x); max |diff| {err:.2e} (largest effect {effect:.2e})")  # fmt: skip
    if args.full_tl:  # the whole TL sweep, for a direct check of the scaling
        t_full = timed(lambda: get_act_patch_direct_path_all_sources(model.bridge, task.corrupted, clean_cache, corr_cache,
                                                                     patching_metric, component="q", verbose=False),
                       args.device)  # fmt: skip
        print(f"   TL all_sources measured whole: {t_full[0]:.2f}s wall {t_full[1]:.2f}s cpu")
    # 4. EAP against TL's attribution_patch (per example, per position), and exact vs reference
    one = task.subset(range(min(len(task), args.tl_eap_prompts)))

    @torch.enable_grad()
    def tl_eap():
        out = {}
        for i in range(len(one)):
            T = int(one.end[i]) + 1
            a, d = int(one.answers[i]), int(one.distractors[i])
            res = attribution_patch(model.bridge, one.clean[i : i + 1, :T], one.corrupted[i : i + 1, :T],
                                    lambda lg, a=a, d=d, T=T: lg[0, T - 1, a] - lg[0, T - 1, d],
                                    EdgeAttributionConfig(granularity="edge"))  # fmt: skip
            for k, v in res.edge_scores.items():
                out[k] = out.get(k, 0.0) + v / len(one)
        return out

    t_te = best([timed(tl_eap, args.device) for _ in range(args.repeats)])
    t_oe = best([timed(lambda: attribute(model, one, "eap", at="corrupted", batch_size=len(one)), args.device)
                 for _ in range(args.repeats)])  # fmt: skip
    ours_eap = attribute(model, one, "eap", at="corrupted", batch_size=len(one))
    summed: dict[str, float] = {}
    for (w, r), v in tl_eap().items():
        key = f"{_tl_writer(w)}->{_tl_reader(r)}"
        summed[key] = summed.get(key, 0.0) + v
    names = graph.edge_names()
    diff = max(abs(summed[n] - float(s)) for n, s in zip(names, ours_eap.scores))
    print(f"4. EAP (gradient at corrupted) on {len(one)} prompts: ours {t_oe[0]:.2f}s / {t_oe[1]:.2f}s, TL attribution_patch "
          f"(edge) {t_te[0]:.2f}s / {t_te[1]:.2f}s -> {t_te[0] / t_oe[0]:.1f}x wall; max |diff| {diff:.2e} "
          f"(largest score {float(ours_eap.scores.abs().max()):.2e})")  # fmt: skip
    sub = sorted(random.Random(2).sample(range(graph.n_edges), min(graph.n_edges, args.ref_edges)))
    t_ref = timed(lambda: edge_effects_reference(model, task, sub), args.device)
    t_fast = best([timed(lambda: edge_effects(model, task, sub), args.device) for _ in range(args.repeats)])
    ref = edge_effects_reference(model, task, sub)
    fast = edge_effects(model, task, sub).scores[sub]
    print(f"   exact edge patching, {len(sub)} random edges: batched {t_fast[0]:.2f}s, one forward per edge "
          f"{t_ref[0]:.2f}s -> {t_ref[0] / t_fast[0]:.1f}x; max |diff| {float((fast - ref).abs().max()):.2e} "
          f"(largest effect {float(ref.abs().max()):.2e})")  # fmt: skip


def _tl_writer(n) -> str:
    return {"embed": "embed", "attn_head_out": f"a{n.layer}.h{n.head}", "mlp_out": f"m{n.layer}"}[n.kind]


def _tl_reader(n) -> str:
    if n.kind == "q_input":
        return f"a{n.layer}.h{n.head}<q>"
    if n.kind in ("k_input", "v_input"):
        return f"a{n.layer}.kv{n.head}<{n.kind[0]}>"
    return f"m{n.layer}" if n.kind == "mlp_in" else "logits"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--dtype", default=None, help="float32 (default on CPU), bfloat16, float16")
    p.add_argument("--n-prompts", type=int, default=16, help="scoring prompts (one batch), as many held out")
    p.add_argument("--steps", type=int, default=5, help="EAP-IG steps")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--corruption", default=None, help="IOI's counterfactual (default: the task's, s2-io); abc, new-s")
    p.add_argument("--tl-shape", default="small", choices=sorted(SHAPES))
    p.add_argument("--tl-prompts", type=int, default=8)
    p.add_argument("--tl-sources", type=int, default=8, help="source heads TL's direct path patching is timed on")
    p.add_argument("--tl-eap-prompts", type=int, default=2)
    p.add_argument("--ref-edges", type=int, default=64, help="edges the one-forward-per-edge reference patches")
    p.add_argument("--full-tl", action="store_true", help="also time TL's whole all-sources sweep")
    p.add_argument("--skip", default="", help="comma-separated sections to skip, e.g. 3,4")
    p.add_argument("--ops", action="store_true", help="1: also count aten operators (torch.profiler, a GPU launch proxy)")
    p.add_argument("--exact-top", type=int, default=20, help="5: edges the exact check patches")
    p.add_argument("--random-draws", type=int, default=3, help="5: draws of the random baseline")
    args = p.parse_args()
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    torch.set_grad_enabled(False)
    print(f"device {args.device}, dtype {args.dtype or 'default'}, {torch.get_num_threads()} threads")
    if not {"1", "2", "5"} <= skip:
        model = load(args.model, device=args.device, dtype=args.dtype)
        split = load_task("ioi", model, args.n_prompts, args.n_prompts, seed=0, corruption=args.corruption)
        g = Graph.of(model)
        print(f"{model.info.name}: {g.n_nodes} nodes, {g.n_edges} edges; IOI ({split.score.corruption}) {len(split.score)} scoring prompts "
              f"x {split.score.clean.shape[1]} tokens, {len(split.heldout)} held out x {split.heldout.clean.shape[1]}")  # fmt: skip
        if "1" not in skip:
            bench_attribution(model, split, args)
        if "2" not in skip:
            bench_curve(model, split, args)
        if "5" not in skip:
            bench_exact_check(model, split, args)
        del model
    if not {"3", "4"} <= skip:
        bench_tl(args)
    print(peak())


if __name__ == "__main__":
    main()
