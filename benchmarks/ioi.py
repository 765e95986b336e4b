"""IOI on SmolLM2-135M (270 heads by default), each fast path beside its plain loop, in one run:

1. path patching, every sender head to the logits and to two receiver sets (name-mover queries at
   END; S-inhibition keys/values at S2): fast batched vs the one-pass-per-sender reference, timed
   on --reference-senders heads (default: all) and scaled to every head; they must agree to 1e-4;
2. evaluation (faithfulness, completeness, minimality): the ABC means (--n-abc prompts per
   template), then every ablation configuration as a plan of the ablation engine, replayed from its
   first differing layer and position, vs one hooked forward pass of the whole model per
   configuration (the plain reference, timed on --reference-configs of them and scaled); they must
   agree to 1e-4;
3. the whole `interp ioi --n-prompts N` with its checks (completeness and minimality) on.

    python benchmarks/ioi.py [--device cpu|cuda] [--model SPEC] [--dtype float32] [--n-prompts 48]
        [--reference-senders N] [--reference-configs N] [--skip-path] [--skip-cli]

The evaluation circuit is the one discovery finds on the discovery prompts (discovery is timed
too). Peak memory: CUDA's max allocated, or the process's peak RSS on the CPU.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import sys
import tempfile
import time

import torch

from interp import load
from interp.circuits.discover import discover
from interp.circuits.evaluate import abc_means, configurations
from interp.circuits.head_configs import ablated_logit_diffs, ablated_logit_diffs_reference
from interp.circuits.path import Receivers, all_heads, path_patch
from interp.circuits.path_reference import path_patch_reference
from interp.cli import main as cli
from interp.data.ioi import make_ioi

RECEIVER_SETS = {  # SmolLM2's: the name movers and S suppression head, then the S-inhibition heads
    "mover queries @END (23.0, 23.2, 23.3; q)": Receivers([(23, 0), (23, 2), (23, 3)], "q", "END"),
    "s-inhibition keys+values @S2 (20.0, 19.2; kv)": Receivers([(20, 0), (19, 2)], "kv", "S2"),
}


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def peak_gib(device: str) -> float:
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def bench_path(model, ds, receivers, n_ref: int, device: str, label: str) -> None:
    senders = all_heads(model)
    path_patch(model, ds, senders[:9], receivers)  # warm-up
    _sync(device)
    t = time.perf_counter()
    fast = path_patch(model, ds, senders, receivers)
    _sync(device)
    t_fast = time.perf_counter() - t
    sub = senders if n_ref >= len(senders) else sorted(random.Random(0).sample(senders, n_ref))
    t = time.perf_counter()
    ref = path_patch_reference(model, ds, sub, receivers)
    _sync(device)
    t_ref = (time.perf_counter() - t) * len(senders) / len(sub)
    rows = torch.tensor([senders.index(h) for h in sub])
    err = float((fast.patched[rows] - ref.patched).abs().max())
    scaled = "" if len(sub) == len(senders) else f" (measured on {len(sub)} senders, scaled to {len(senders)})"
    print(f"{label:<48} fast {t_fast:8.2f}s   reference {t_ref:9.2f}s{scaled}   speedup {t_ref / t_fast:6.1f}x   "
          f"max |diff| {err:.2e} ({'identical' if err < 1e-4 else 'MISMATCH'})", flush=True)


def bench_evaluation(model, args) -> None:
    found = make_ioi(model, args.n_prompts, seed=0, part="discovery")
    heldout = make_ioi(model, args.n_prompts, seed=0, part="evaluation")
    t = time.perf_counter()
    classes = discover(model, found).classes
    print(f"discovery on {len(found)} prompts: {time.perf_counter() - t:.1f}s; "
          f"{sum(map(len, classes.values()))} heads in {len(classes)} classes", flush=True)
    _sync(args.device)
    t = time.perf_counter()
    means = abc_means(model, heldout, args.n_abc)
    _sync(args.device)
    t_means = time.perf_counter() - t
    n_templates = len({int(x) // 2 for x in heldout.groups})
    print(f"ABC means ({args.n_abc} prompts x {n_templates} templates = {args.n_abc * n_templates} ABC prompts): "
          f"{t_means:.1f}s", flush=True)
    index, configs, _ = configurations(model, heldout, classes, True, 4, 0)
    bases = [index["model"], index["circuit"]]
    t = time.perf_counter()
    fast = ablated_logit_diffs(model, heldout, means, configs, bases=bases)
    _sync(args.device)
    t_fast = time.perf_counter() - t
    n = len(configs)
    sub = list(range(n)) if args.reference_configs >= n else sorted(random.Random(0).sample(range(n), args.reference_configs))
    subset = type(configs)(configs.keep_all[sub], configs.keep_at[sub], configs.head_at)
    t = time.perf_counter()
    ref = ablated_logit_diffs_reference(model, heldout, means, subset)
    _sync(args.device)
    t_ref = (time.perf_counter() - t) * n / len(sub)
    err = float((fast[sub] - ref).abs().max())
    scaled = "" if len(sub) == n else f" (measured on {len(sub)}, scaled to {n})"
    print(f"{n} ablation configurations x {len(heldout)} held-out prompts: replayed {t_fast:.1f}s   "
          f"one pass each {t_ref:.1f}s{scaled}   speedup {t_ref / t_fast:.1f}x   max |diff| {err:.2e} "
          f"({'identical' if err < 1e-4 else 'MISMATCH'})", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--model", default="smollm2-135m", help="any spec interp.load accepts")
    p.add_argument("--dtype", default=None, help="float32 (default), bfloat16, float16")
    p.add_argument("--n-prompts", type=int, default=48, help="discovery prompts (as many held out; the CLI's default)")
    p.add_argument("--n-abc", type=int, default=64, help="ABC prompts per template for the means")
    p.add_argument("--reference-senders", type=int, default=270, help="senders the slow path-patching loop runs")
    p.add_argument("--reference-configs", type=int, default=1000, help="configurations the slow evaluation loop runs")
    p.add_argument("--skip-path", action="store_true", help="skip the path-patching comparison")
    p.add_argument("--skip-cli", action="store_true", help="skip timing the whole `interp ioi`")
    args = p.parse_args()
    torch.set_grad_enabled(False)
    model = load(args.model, device=args.device, dtype=args.dtype)
    threads = torch.get_num_threads()
    load_avg = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"{model.info.name} ({model.dtype}) on {args.device}, {threads} threads, load average {load_avg}", flush=True)
    if not args.skip_path:
        ds = make_ioi(model, args.n_prompts, seed=0, part="discovery")
        bench_path(model, ds, None, args.reference_senders, args.device, "every head -> logits")
        if model.info.name.startswith("smollm2"):
            for label, receivers in RECEIVER_SETS.items():
                bench_path(model, ds, receivers, args.reference_senders, args.device, f"every head -> {label}")
    bench_evaluation(model, args)
    if not args.skip_cli:
        with tempfile.TemporaryDirectory() as out:
            t = time.perf_counter()
            rc = cli(["ioi", "--model", args.model, "--n-prompts", str(args.n_prompts), "--n-abc", str(args.n_abc),
                      "--device", args.device, "--out", out] + (["--dtype", args.dtype] if args.dtype else []))
            print(f"interp ioi --n-prompts {args.n_prompts} ({args.n_prompts} held out, checks on, model load included): "
                  f"{time.perf_counter() - t:.1f}s wall (rc {rc})", flush=True)
    print(f"peak memory {peak_gib(args.device):.2f} GiB; load average at the end "
          + " / ".join(f"{x:.1f}" for x in os.getloadavg()), file=sys.stdout)


if __name__ == "__main__":
    main()
