"""The IOI circuit beside random circuits of its shape: the same number of heads per class (so each
random head is kept at its class's positions, interp.circuits.head_configs.CLASS_POSITIONS), drawn from
all heads, evaluated on the same held-out prompts with the same ABC means.

    python benchmarks/ioi_random.py [--device cuda] [--n-prompts 24] [--n-heldout 24,256] [--draws 10]
        [--seed 0] [--out benchmarks/results/ioi_random.json]
"""

from __future__ import annotations

import argparse
import importlib
import random

from interp import load
from interp.data.ioi import ioi_split
from interp.io import write_json

evaluate_mod = importlib.import_module("interp.circuits.evaluate")  # the package re-exports the function
discover_mod = importlib.import_module("interp.circuits.discover")


def random_like(classes: dict, n_layers: int, n_heads: int, rng: random.Random) -> dict:
    """As many heads per class as `classes`, drawn without replacement from every head."""
    pool = rng.sample([(layer, h) for layer in range(n_layers) for h in range(n_heads)], sum(map(len, classes.values())))
    out, i = {}, 0
    for c, hs in classes.items():
        out[c], i = pool[i : i + len(hs)], i + len(hs)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--device", default="cpu")
    p.add_argument("--n-prompts", type=int, default=24)
    p.add_argument("--n-heldout", default="24,256")
    p.add_argument("--draws", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="benchmarks/results/ioi_random.json")
    args = p.parse_args()
    model = load(args.model, device=args.device)
    out = {}
    for n in [int(x) for x in args.n_heldout.split(",")]:
        split = ioi_split(model, args.n_prompts, n, args.seed)
        disc = discover_mod.discover(model, split.score, discover_mod.DiscoveryConfig(position_threshold=None))
        found = evaluate_mod.evaluate(model, split.heldout, disc.classes, checks=False).faithfulness
        rng = random.Random(args.seed + 1)
        draws = [evaluate_mod.evaluate(model, split.heldout, random_like(disc.classes, model.info.n_layers,
                                                                          model.info.n_heads, rng), checks=False)
                 .faithfulness.value for _ in range(args.draws)]  # fmt: skip
        out[f"held out {n}"] = {"heads": len(disc.ranked), "circuit": found.to_dict(), "random": draws,
                                "random_mean": sum(draws) / len(draws), "random_max": max(draws), "random_min": min(draws)}
        print(f"held out {n}: circuit {found:.3f}; {args.draws} random circuits of its shape: mean "
              f"{out[f'held out {n}']['random_mean']:.3f}, range {min(draws):.3f} to {max(draws):.3f}", flush=True)
    write_json(args.out, out, indent=1)


if __name__ == "__main__":
    main()
