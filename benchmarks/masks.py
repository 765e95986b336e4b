"""Learned edge masks and EAP-IG over activations beside EAP-IG on IOI: time, forward+backward passes, peak
memory, and the circuit each gives on the same held-out prompts (f at 5 % of the edges, CPR, CMD).

Each method scores the same --n-prompts scoring prompts; the curve is MIB's (counterfactual ablation,
pruned top-n; CPR by signed score, CMD by |score|) on --n-heldout held-out prompts (IOI's default
counterfactual, S2 -> IO, unless --corruption abc). Passes are counted in prompt-forwards as
interp.circuits.cost does (a backward counts two) and, for the masks, in optimizer steps (one
forward+backward of --mask-batch prompts each), on top of the EAP-IG warm start.

    .venv/bin/python benchmarks/masks.py [--device cuda] [--dtype float32] [--n-prompts 64] [--n-heldout 64]
        [--steps 5] [--mask-steps 300] [--mask-batch 16] [--mask-lr 0.1] [--mask-loss kl] [--methods eap-ig,eap-ig-act,edge-pruning]
        [--seed 0] [--graph grouped|mib] [--out masks.json]

The headline's draw is --seed 11 with 1,000 + 1,000 prompts (benchmarks/circuits_headline.py); --graph mib
scores MIB's ungrouped graph (q/k/v per query head) instead of ours (k/v per KV head).
"""

from __future__ import annotations

import argparse
import resource
import time

import torch

from interp import load
from interp.circuits import masks, methods
from interp.circuits.attribute import eap_ig
from interp.circuits.faithfulness import faithfulness_curve
from interp.circuits.types import Graph
from interp.circuits.ungroup import ungrouped
from interp.data.tasks import load_task
from interp.io import write_json


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def reset_peak(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()


def peak(device: str) -> str:
    if device.startswith("cuda"):
        return f"peak GPU {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB"
    return f"peak RSS (process) {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB"


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--n-prompts", type=int, default=64)
    p.add_argument("--n-heldout", type=int, default=64)
    p.add_argument("--corruption", default=None)
    p.add_argument("--steps", type=int, default=5, help="EAP-IG steps (and the masks' warm start)")
    p.add_argument("--batch-size", type=int, default=80, help="rows a gradient pass of the EAP-IG methods")
    p.add_argument("--mask-steps", type=int, default=300)
    p.add_argument("--mask-batch", type=int, default=16)
    p.add_argument("--mask-lr", type=float, default=0.1)
    p.add_argument("--mask-loss", default="kl")
    p.add_argument("--mask-target", type=float, default=0.05)
    p.add_argument("--methods", default="eap-ig,eap-ig-act,edge-pruning")
    p.add_argument("--n-boot", type=int, default=200)
    p.add_argument("--seed", type=int, default=0, help="the prompts' draw (the headline's: 11)")
    p.add_argument("--graph", default="grouped", choices=["grouped", "mib"])
    p.add_argument("--out", default=None, help="also write the rows here (JSON)")
    args = p.parse_args()

    model = load(args.model, device=args.device, dtype=args.dtype)
    model = ungrouped(model) if args.graph == "mib" else model
    split = load_task("ioi", model, args.n_prompts, args.n_heldout, seed=args.seed, corruption=args.corruption)
    task, held = split.score, split.heldout
    graph = Graph.of(model)
    print(f"{model.info.name} on {args.device} ({args.dtype}); {graph.n_edges:,} edges; IOI ({args.corruption or 'default'} "
          f"counterfactual), {len(task)} scoring x {task.clean.shape[1]} tokens, {len(held)} held out")  # fmt: skip
    warm, warm_s = None, 0.0
    rows = []
    for name in args.methods.split(","):
        opts = methods.Options(steps=args.steps, batch_size=args.batch_size)
        sync(args.device)
        reset_peak(args.device)
        start = time.perf_counter()
        if name == "edge-pruning":
            cfg = masks.MaskConfig(steps=args.mask_steps, batch=args.mask_batch, lr=args.mask_lr, loss=args.mask_loss,
                                   target=args.mask_target, warm_steps=args.steps)  # fmt: skip
            if warm is None:
                warm = eap_ig(model, task, args.steps, args.batch_size)
                warm_s = time.perf_counter() - start
            start = time.perf_counter() - warm_s  # the warm start counts, whether run here or above
            scores = masks.learn(model, task, cfg, warm=warm)
            passes = masks.forwards(cfg, len(task))
            note = (f"warm start (EAP-IG) {warm_s:.1f} s + {cfg.steps} steps x {min(cfg.batch, len(task))} prompts "
                    f"(fwd+bwd), open share {cfg.history[-1][1]:.3f}, loss {cfg.history[0][0]:.3g} -> {cfg.history[-1][0]:.3g}")  # fmt: skip
        else:
            scores = methods.score_edges(model, task, name, steps=args.steps, batch_size=args.batch_size)
            passes = methods.get(name).forwards(opts, len(task), graph)
            note = ""
            if name == "eap-ig":
                warm, warm_s = scores, time.perf_counter() - start
        sync(args.device)
        seconds = time.perf_counter() - start
        mem = peak(args.device)
        signed = faithfulness_curve(model, scores, held, ranking="signed", n_boot=args.n_boot)
        absolute = faithfulness_curve(model, scores, held, ranking="abs", n_boot=args.n_boot)
        f, lo, hi = absolute.at(5.0)
        print(f"{name:>13}: {seconds:7.1f} s, {passes:,.0f} prompt-forwards ({passes / len(task):,.0f} a prompt), {mem}; "
              f"f at 5% = {f:.3f} [{lo:.3f}, {hi:.3f}], CPR {signed.cpr:.3f}, CMD {absolute.cmd:.3f} "
              f"(m full {absolute.m_full:.2f}, m empty {absolute.m_empty:.2f}) {note}")  # fmt: skip
        rows.append({"method": name, "seconds": seconds, "prompt_forwards": passes, "memory": mem, "f_at_5": [f, lo, hi],
                     "cpr": signed.cpr, "cmd": absolute.cmd, "m_full": absolute.m_full, "m_empty": absolute.m_empty,
                     "note": note})  # fmt: skip
        if args.out:
            write_json(args.out, {"model": args.model, "device": args.device, "dtype": args.dtype, "graph": args.graph,
                                  "corruption": args.corruption or "s2-io", "seed": args.seed, "n_scoring": len(task),
                                  "n_heldout": len(held), "edges": graph.n_edges, "rows": rows}, indent=1)  # fmt: skip


if __name__ == "__main__":
    main()
