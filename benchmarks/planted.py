"""Planted circuits (MIB's InterpBench track): every registered method's edge ranking scored by AUROC against
the edges planted by hand in interp.circuits.planted's models, beside a random ranking.

    python benchmarks/planted.py [--presets sharp,soft,saturated,successor-sharp,successor-soft,gqa-sharp,gqa-soft]
        [--methods eap-ig,eap,exact,...] [--n-prompts 32] [--seg-len 10] [--seed 0]
        [--out benchmarks/results/planted.json]

Each attention-only preset is scored on two tasks: `planted-induction` (corrupted prompts resampled
whole) and the built-in `induction` (first half resampled: END's token is kept, so the induction head's
query edge is silent too); the successor presets on `planted-successor`. Every run is scored on both
graphs (interp.circuits.planted.both_graphs): ours ("grouped": k/v inputs per KV head) on the model and
MIB's ("mib": q, k, v per query head) on its ungrouped copy. The gqa presets have grouped-query attention
(4 query heads on 2 KV heads, the induction head sharing its KV head with a decoy), so the two graphs
differ there; the other presets have none, the two graphs are one, and their rows say "both".
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from interp.circuits import methods as registry
from interp.circuits.planted import PRESETS, both_graphs, build_planted, planted_task
from interp.circuits.recovery import auroc, recover
from interp.data.task import end_logits, metric_fn
from interp.data.tasks import induction_task
from interp.io import write_json


def random_auroc(truth, draws: int, seed: int) -> tuple[float, float, float]:
    """AUROC of random rankings (MIB's Random row): mean, min and max over `draws` draws."""
    positive, counted = truth.labels()
    g = torch.Generator().manual_seed(seed)
    values = [auroc(torch.rand(int(counted.sum()), generator=g), positive[counted]) for _ in range(draws)]
    return sum(values) / draws, min(values), max(values)


@torch.no_grad()
def behaviour(model, task) -> dict:
    m = metric_fn(task)
    clean = end_logits(model(task.clean), task.end)
    corrupted = end_logits(model(task.corrupted), task.end)
    return {"accuracy": float((clean.argmax(-1) == task.answers).float().mean()),
            "m_clean": float(m(clean).mean()), "m_corrupted": float(m(corrupted).mean())}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--presets", default=",".join(PRESETS))
    p.add_argument("--methods", default=None, help="comma-separated (default: every registered method)")
    p.add_argument("--n-prompts", type=int, default=32)
    p.add_argument("--seg-len", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--draws", type=int, default=1000)
    p.add_argument("--out", default="benchmarks/results/planted.json")
    args = p.parse_args()
    methods = args.methods.split(",") if args.methods else list(registry.names())
    out = {"machine": platform.processor() or platform.machine(), "torch_threads": torch.get_num_threads(),
           "date": time.strftime("%Y-%m-%d"), "n_prompts": args.n_prompts, "seg_len": args.seg_len, "runs": []}  # fmt: skip
    print(
        f"{'preset':16} {'task':18} {'graph':8} {'method':13} {'AUROC |s|':>9} {'signed':>7} {'all in top':>10} {'s':>7}"
    )
    for preset in args.presets.split(","):
        spec = PRESETS[preset]
        model = build_planted(spec)
        tasks = [planted_task(model, args.n_prompts, 2, args.seed, args.seg_len).score]
        if not spec.mlp:
            tasks.append(induction_task(model, args.n_prompts, 2, args.seed, args.seg_len).score)
        for task in tasks:
            graphs = both_graphs(model, task)
            if graphs["mib"][0] is model:  # no grouped-query attention: one graph
                graphs = {"both": graphs["grouped"]}
            for graph_name, (scored, truth) in graphs.items():
                run = {"preset": preset, "spec": vars(spec), "task": task.name, "graph_name": graph_name,
                       **behaviour(scored, task), "graph": truth.graph.summary(), "planted": list(truth.planted),
                       "silent": list(truth.silent), "mib_graph_same": graph_name == "both", "methods": []}  # fmt: skip
                mean, lo, hi = random_auroc(truth, args.draws, args.seed)
                run["random"] = {"mean": mean, "min": lo, "max": hi, "draws": args.draws}
                lead = f"{preset:16} {task.name:18} {graph_name:8}"
                print(f"{lead} {'random':13} {mean:9.3f} {mean:7.3f} {'':>10} {'':>7}"
                      f"  ({args.draws} draws: {lo:.3f} to {hi:.3f}; {truth.graph.n_edges} edges; m(clean) "
                      f"{run['m_clean']:.2f}, m(corrupted) {run['m_corrupted']:.2f}, accuracy {run['accuracy']:.2f})",
                      flush=True)  # fmt: skip
                for row in recover(scored, task, truth, methods):
                    run["methods"].append(row.to_dict())
                    if row.error:
                        print(f"{lead} {row.method:13} refused: {row.error}", flush=True)
                        continue
                    top = f"{row.worst_rank}/{row.n_planted}"
                    print(f"{lead} {row.method:13} {row.auroc_abs:9.3f} {row.auroc_signed:7.3f} "
                          f"{top:>10} {row.seconds:7.1f}", flush=True)  # fmt: skip
                out["runs"].append(run)
                write_json(args.out, out, indent=1)
    print(
        "graph: grouped = ours (k/v per KV head), mib = MIB's ungrouped (q/k/v per query head); "
        "both = no grouped-query attention, the two graphs are one"
    )


if __name__ == "__main__":
    main()
