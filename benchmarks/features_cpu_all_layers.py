"""Skip transcoders for every layer of a model on a CPU, from one forward stream, within a wall-clock budget.

The loop is interp.features.train's (`build`, `train_step`, fold the scales, `formats.save`) with two
additions for a shared CPU: `--probe N` runs N steps of a fresh forward and N of cached activations and
prints their seconds per step (to size a run), and `--deadline-s` stops a run early and saves what it
has (the training record says so; the learning rate then has not decayed to 0).

    python benchmarks/features_cpu_all_layers.py --model smollm2-135m --probe 3
    python benchmarks/features_cpu_all_layers.py --model smollm2-135m --tokens 60000 --epochs 4 --cache \\
        --out runs/smollm2_tc30
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch


def settings_from(args):
    from interp.features.train import TrainSettings

    return TrainSettings(site="mlp", layers=None, d_sae=args.d_sae, k=args.k, skip=True, corpus=args.corpus,
                         n_tokens=args.tokens, seq_len=args.seq_len, batch_tokens=args.batch_tokens, lr=args.lr,
                         warmup_steps=args.warmup, dead_tokens=args.dead_tokens, dtype=args.dtype,
                         epochs=args.epochs, cache=args.cache, decode=args.decode)  # fmt: skip


def rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def parse(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--d-sae", type=int, default=2048)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--corpus", default="mix")
    ap.add_argument("--tokens", type=int, default=60_000)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--cache", action="store_true")
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--batch-tokens", type=int, default=1024)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--dead-tokens", type=int, default=50_000)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--decode", default="sparse")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--probe", type=int, default=0, help="time N fresh and N cached steps, save nothing")
    ap.add_argument("--deadline-s", type=float, default=None, help="stop after this many seconds and save")
    ap.add_argument("--log-every", type=int, default=10)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    if not args.probe and not args.out:
        ap.error("--out is needed for a run")
    if not args.probe and Path(args.out).exists() and any(Path(args.out).iterdir()):
        ap.error(f"{args.out} is not empty")
    return args


def main(argv=None) -> int:
    args = parse(argv)
    from interp import load
    from interp.features import formats
    from interp.features.loss import fold_scales
    from interp.features.train import build, train_step

    torch.set_num_threads(args.threads)
    t_load = time.perf_counter()
    model = load(args.model, device="cpu")
    s = settings_from(args)
    if args.probe:
        s.n_tokens = args.probe * args.batch_tokens * 127 // 128
        s.epochs, s.cache = 2, True
    s = s.resolved(model)
    t = build(model, s)
    print(f"load + table: {time.perf_counter() - t_load:.1f} s; {len(t.table)} windows, {t.total_steps} steps of "
          f"{t.windows_per_step} windows", flush=True)  # fmt: skip
    if args.probe:
        times = []
        for _ in range(t.total_steps):
            t0 = time.perf_counter()
            got = train_step(t)
            times.append(time.perf_counter() - t0)
            print(f"step {t.state.step}: {times[-1]:.2f} s, {got['tokens']} tokens, FVU {float(got['fvu'].mean()):.3f}, "
                  f"peak RSS {rss_gib():.2f} GiB", flush=True)  # fmt: skip
        half = len(times) // 2
        fresh, cached = times[1:half], times[half + 1 :]
        out = {"settings": asdict(s), "fresh_s_per_step": sum(fresh) / max(len(fresh), 1),
               "cached_s_per_step": sum(cached) / max(len(cached), 1), "peak_rss_gib": rss_gib()}  # fmt: skip
        print(json.dumps({k: v for k, v in out.items() if k != "settings"}, indent=1))
        return 0

    out = Path(args.out)
    t0, stopped = time.perf_counter(), False
    while t.state.step < t.total_steps:
        got = train_step(t)
        done = t.state.step
        if done % args.log_every == 0 or done == t.total_steps:
            el = time.perf_counter() - t0
            rec = {"step": done, "tokens": t.state.tokens, "fvu": float(got["fvu"].mean()), "seconds": el,
                   "fvu_by_layer": [round(float(v), 4) for v in got["fvu"]], "dead": float(got["dead"].mean()),
                   "lr": t.opt.param_groups[0]["lr"], "tokens_per_s": t.state.tokens / el}  # fmt: skip
            t.state.log.append(rec)
            print(f"step {done}/{t.total_steps} {el:.0f} s {rec['tokens_per_s']:.0f} tok/s FVU {rec['fvu']:.3f} "
                  f"dead {rec['dead']:.4f} lr {rec['lr']:.2e} RSS {rss_gib():.1f} GiB", flush=True)  # fmt: skip
        if args.deadline_s and time.perf_counter() - t0 > args.deadline_s and done < t.total_steps:
            print(f"deadline: stopping after step {done} of {t.total_steps}", flush=True)
            stopped = True
            break
    t.state.seconds = time.perf_counter() - t0
    training = {"settings": asdict(s), "steps": t.state.step, "planned_steps": t.total_steps, "tokens": t.state.tokens,
                "seconds": t.state.seconds, "stopped_at_deadline": stopped, "threads": args.threads,
                "dead_fraction": float((t.since_fired > s.dead_tokens).float().mean()), "log": t.state.log,
                "scales": t.scales.tolist(), "trainer": "benchmarks/features_cpu_all_layers.py"}  # fmt: skip
    fold_scales(t.d, t.scales[0], t.scales[1])
    formats.save(t.d, out, training=training)
    print(f"saved {out}: {t.state.step} steps, {t.state.tokens} tokens, {t.state.seconds:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
