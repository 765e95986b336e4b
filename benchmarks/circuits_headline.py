"""The IOI edge-circuit headline as a paper would quote it (issue 29): each graph (ours, MIB's ungrouped one),
each counterfactual (MIB's S2 -> IO, Wang et al.'s ABC), each method, on a fresh draw of held-out prompts
(templates and names the scoring side never saw), beside MIB's Random row, with intervals that resample
the scoring prompts as well as the held-out ones (interp.circuits.draws).

Per row: f at 5 % of the graph's edges (|score| ranking, pruned, counterfactual ablation), its interval
over the held-out prompts alone and over scoring draws and held-out prompts together, CPR (signed
ranking) and CMD (|score| ranking), m(full), m(empty) and m(C at 5 %) in logits, random circuits of the
same sizes (f at 5 %, CPR, CMD: mean and range over draws), and the scoring time.

    python benchmarks/circuits_headline.py --device cuda --n-prompts 1000 --n-heldout 1000 --seed 11 \\
        --graphs grouped,mib --corruptions s2-io,abc --methods eap-ig --scoring-draws 3 --out results.json
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from interp import load
from interp.circuits import methods
from interp.circuits.faithfulness import MIB_PERCENTS
from interp.circuits.io import HEADLINE
from interp.circuits.report import find_circuit
from interp.circuits.ungroup import ungrouped
from interp.data.tasks import load_task
from interp.io import write_json


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def row(model, graph: str, corruption: str, method: str, args) -> dict:
    split = load_task("ioi", model, args.n_prompts, args.n_heldout, args.seed, None, corruption)
    sync(args.device)
    t = time.time()
    methods.score_edges(model, split.score, method, args.steps, batch_size=args.batch_size)  # timed alone
    sync(args.device)
    t_score = time.time() - t
    report = find_circuit(model, split, method, args.steps, exact_top=0, batch_size=args.batch_size, seed=args.seed,
                          random_draws=args.random_draws, scoring_draws=args.scoring_draws, graph_name=graph)  # fmt: skip
    c, pool, scores = report.curve, report.pooled, report.scores
    i5 = c.percents.index(HEADLINE)
    r = report.random
    f, lo, hi = c.at(HEADLINE)
    out = {
        "graph": graph, "corruption": corruption, "method": method,
        "n_nodes": scores.graph.n_nodes, "n_edges": scores.graph.n_edges,
        "n_scoring": len(split.score), "n_heldout": len(split.heldout), "seed": args.seed,
        "f_5": f, "f_5_ci_heldout": [lo, hi], **({"f_5_pooled": pool.faithfulness[i5], "f_5_ci_pooled": [pool.lo[i5], pool.hi[i5]],
           "f_5_per_draw": [d[i5] for d in pool.per_draw]} if pool is not None else {}),
        "cpr": report.cpr, "cpr_ci": list(report.curve_signed.cpr_ci), "cmd": report.cmd, "cmd_ci": list(c.cmd_ci),
        "m_full": c.m_full, "m_empty": c.m_empty, "m_circuit_5": c.m_circuit[i5],
        "edges_5": c.n_edges[i5], "score_seconds": t_score,
        "curve": c.points(),
    }  # fmt: skip
    if r is not None:
        f5 = [d[r.percents.index(HEADLINE)] for d in r.faithfulness]
        out["random"] = {"draws": r.draws, "f_5_mean": sum(f5) / len(f5), "f_5_range": [min(f5), max(f5)],
                         "cpr_mean": sum(r.cpr) / len(r.cpr), "cmd_mean": sum(r.cmd) / len(r.cmd)}  # fmt: skip
    print(json.dumps({k: v for k, v in out.items() if k != "curve"}), flush=True)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--n-prompts", type=int, default=1000)
    p.add_argument("--n-heldout", type=int, default=1000)
    p.add_argument("--seed", type=int, default=11)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=80)
    p.add_argument("--graphs", default="grouped,mib")
    p.add_argument("--corruptions", default="s2-io,abc")
    p.add_argument("--methods", default="eap-ig")
    p.add_argument("--scoring-draws", type=int, default=3)
    p.add_argument("--random-draws", type=int, default=5)
    p.add_argument("--out", default="benchmarks/results/circuits_headline.json")
    args = p.parse_args()
    base = load(args.model, device=args.device)
    rows = []
    for graph in args.graphs.split(","):
        model = ungrouped(base) if graph == "mib" else base
        for corruption in args.corruptions.split(","):
            for method in args.methods.split(","):
                rows.append(row(model, graph, corruption, method, args))
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()  # the next row's stacked passes size themselves on free memory
                write_json(args.out, {"model": args.model, "device": str(base.device), "dtype": str(base.dtype),
                                      "percents": list(MIB_PERCENTS), "rows": rows}, indent=1)  # fmt: skip


if __name__ == "__main__":
    main()
