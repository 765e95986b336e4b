"""Where IOI faithfulness is lost to positions: each class of the discovered circuit in turn kept at
every position (the others at their classes' positions, interp.circuits.head_configs.CLASS_POSITIONS), on
the discovery prompts themselves and on held-out prompts. A diagnostic: nothing is chosen by it.

    python benchmarks/ioi_positions.py [--device cuda] [--n-prompts 24] [--n-heldout 256] [--seed 0]
        [--out benchmarks/results/ioi_positions.json]
"""

from __future__ import annotations

import argparse
import importlib

from interp import load
from interp.data.ioi import ioi_split
from interp.io import write_json

evaluate_mod = importlib.import_module("interp.circuits.evaluate")  # the package re-exports the function
discover_mod = importlib.import_module("interp.circuits.discover")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--device", default="cpu")
    p.add_argument("--n-prompts", type=int, default=24)
    p.add_argument("--n-heldout", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="benchmarks/results/ioi_positions.json")
    args = p.parse_args()
    model = load(args.model, device=args.device)
    split = ioi_split(model, args.n_prompts, args.n_heldout, args.seed)
    disc = discover_mod.discover(model, split.score, discover_mod.DiscoveryConfig(position_threshold=None))
    out = {}
    for name, ds in (("discovery (in sample)", split.score), (f"held out, {args.n_heldout}", split.heldout)):
        base = evaluate_mod.evaluate(model, ds, disc.classes, checks=False)
        row = {"per position": base.faithfulness.to_dict(), "all positions": base.faithfulness_all_positions.to_dict()}
        for c in disc.classes:  # a class name outside CLASS_POSITIONS is kept at every position
            freed = {(k if k != c else f"{k} @every position"): v for k, v in disc.classes.items()}
            row[c] = evaluate_mod.evaluate(model, ds, freed, checks=False).faithfulness.to_dict()
        out[name] = row
        print(name, {k: round(v["value"], 3) for k, v in row.items()}, flush=True)
    write_json(args.out, out, indent=1)


if __name__ == "__main__":
    main()
