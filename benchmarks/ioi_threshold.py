"""Choosing discovery's threshold on validation prompts, never the held-out ones.

Discovery admits a head when its path effect reaches `threshold` of the step's largest
(interp.circuits.discover). For each threshold of a grid this script runs discovery on the
"search" quarter of the IOI data and measures the circuit's faithfulness (each class at its
positions, ABC means) on the "validation" quarter: both are the discovery half split again
(interp.data.ioi.SUBPARTS), so the evaluation half -- the held-out figures -- is never touched.

How the rule came to be (RESULTS.md, "The IOI circuit as Wang et al. found it"). A first rule, the
largest threshold whose validation *value* reaches --goal, picked a 5-head circuit on noise (24
validation prompts, intervals like [0.55, 1.45]) and was replaced, before any held-out figure was
seen, by the largest threshold whose interval's *lower end* reaches it: that chose 0.05 (39 heads on
search prompts). On the held-out prompts (seed 0) that circuit kept 0.739 [0.600, 0.887], below the
goal that validation promised, so the study was made less noisy: --seeds draws (search and
validation prompts both redrawn per seed), --n-validation prompts each, and the rule now in force:

    the largest threshold whose circuit has at most --max-heads heads in every seed and whose
    validation faithfulness reaches --goal in every seed (the worst seed's value); if none does,
    the threshold whose worst seed is highest.

Because it was changed after a held-out figure was seen, its choice is confirmed on fresh held-out
draws (--confirm-seeds: `run_ioi` with the default sizes and that seed, the evaluation half; only
the chosen threshold is run there). On 2026-12-07 it chose 0.5 and the confirmation failed (held-out
0.70 and 0.56), so the shipped default stays the second rule's 0.05 (RESULTS.md). Every rule's table
stays in its JSON file.

    python benchmarks/ioi_threshold.py [--model smollm2-135m] [--device cpu] [--n-prompts 24]
        [--n-validation 64] [--seeds 0,1,2] [--grid 0.03,0.05,0.1,0.15,0.2,0.3,0.5] [--confirm-seeds 1,2]
        [--out benchmarks/results/ioi_threshold_seeds.json] [--rows JSON]
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import time
from pathlib import Path

import torch

from interp import load
from interp.circuits.discover import DiscoveryConfig
from interp.circuits.pipeline import run_ioi
from interp.io import write_json


def by_threshold(rows: list[dict]) -> list[dict]:
    """One row per threshold: its seeds' worst value and largest head count."""
    out: dict[float, dict] = {}
    for r in rows:
        t = out.setdefault(r["threshold"], {"threshold": r["threshold"], "worst": float("inf"), "heads": 0, "values": []})
        t["worst"] = min(t["worst"], r["faithfulness"])
        t["heads"] = max(t["heads"], r["heads"])
        t["values"].append(round(r["faithfulness"], 4))
    return sorted(out.values(), key=lambda t: t["threshold"])


def choose(rows: list[dict], goal: float, max_heads: int) -> dict:
    """The rule in force (module docstring), on the per-threshold summary of `rows`."""
    fits = [t for t in by_threshold(rows) if t["heads"] <= max_heads]
    if not fits:
        raise SystemExit(f"no threshold of the grid keeps at most {max_heads} heads; raise the grid")
    good = [t for t in fits if t["worst"] >= goal]
    return max(good, key=lambda t: t["threshold"]) if good else max(fits, key=lambda t: t["worst"])


def row(r, threshold: float, seed: int, seconds: float) -> dict:
    e = r.evaluation
    return {"threshold": threshold, "seed": seed, "heads": len(r.discovery.ranked), "faithfulness": e.faithfulness.value,
            "lo": e.faithfulness.lo, "hi": e.faithfulness.hi, "n_prompts": e.n_prompts,
            "faithfulness_all_positions": e.faithfulness_all_positions.value,
            "classes": {c: [f"{a}.{b}" for a, b in hs] for c, hs in r.discovery.classes.items()},
            "curve": [round(q["value"], 4) for q in e.curve], "seconds": seconds}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--device", default="cpu")
    p.add_argument("--n-prompts", type=int, default=24, help="search prompts (the CLI's discovery size)")
    p.add_argument("--n-validation", type=int, default=64, help="validation prompts per seed")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--grid", default="0.03,0.05,0.1,0.15,0.2,0.3,0.5")
    p.add_argument("--goal", type=float, default=0.8)
    p.add_argument("--max-heads", type=int, default=54)
    p.add_argument("--confirm-seeds", default="", help="after choosing: held-out runs of the chosen threshold")
    p.add_argument("--out", default="benchmarks/results/ioi_threshold_seeds.json")
    p.add_argument("--rows", default=None, help="a saved --out file: apply the rule to its table, run nothing")
    args = p.parse_args()
    if args.rows:
        saved = json.loads(Path(args.rows).read_text())
        best = choose(saved["rows"], args.goal, args.max_heads)
        return print(f"chosen: threshold {best['threshold']} (at most {best['heads']} heads; worst seed {best['worst']:.3f})")
    model = load(args.model, device=args.device)
    run = {"date": str(datetime.date.today()), "model": model.info.name, "device": args.device, "dtype": str(model.dtype),
           "machine": f"{platform.machine()}, {torch.get_num_threads()} threads"
           + (f", {torch.cuda.get_device_name()}" if args.device.startswith("cuda") else "")}  # fmt: skip
    rows = []
    for seed in [int(x) for x in args.seeds.split(",")]:
        for threshold in [float(x) for x in args.grid.split(",")]:
            start = time.perf_counter()
            r = run_ioi(model, args.n_prompts, seed, n_heldout=args.n_validation,
                        config=DiscoveryConfig(threshold=threshold, position_threshold=None), checks=False,
                        validation=True)  # fmt: skip  (its history is at class positions: no places)
            rows.append(row(r, threshold, seed, time.perf_counter() - start))
            print(f"seed {seed} threshold {threshold:<5} {rows[-1]['heads']:3d} heads   validation faithfulness "
                  f"{r.evaluation.faithfulness:.3f}   all positions {rows[-1]['faithfulness_all_positions']:.3f}   "
                  f"({rows[-1]['seconds']:.0f} s)", flush=True)
    best = choose(rows, args.goal, args.max_heads)
    print(f"chosen: threshold {best['threshold']} (at most {best['heads']} heads; validation faithfulness per seed "
          f"{best['values']}, worst {best['worst']:.3f})", flush=True)
    confirm = []
    for seed in [int(x) for x in args.confirm_seeds.split(",") if x]:
        start = time.perf_counter()
        r = run_ioi(model, args.n_prompts, seed, config=DiscoveryConfig(threshold=best["threshold"], position_threshold=None),
                    checks=False)  # fmt: skip
        confirm.append(row(r, best["threshold"], seed, time.perf_counter() - start))
        print(f"held out, seed {seed}: {confirm[-1]['heads']} heads, faithfulness {r.evaluation.faithfulness:.3f}", flush=True)
    write_json(args.out, {
        **run, "n_prompts": args.n_prompts, "n_validation": args.n_validation, "goal": args.goal,
        "max_heads": args.max_heads, "split": "search -> validation (both inside the discovery half), per seed",
        "rule": "largest threshold with <= max_heads heads in every seed whose validation faithfulness >= goal in "
        "every seed; else the highest worst seed", "rows": rows, "summary": by_threshold(rows),
        "chosen": best["threshold"], "confirm_heldout": confirm,
    }, indent=2)  # fmt: skip


if __name__ == "__main__":
    main()
