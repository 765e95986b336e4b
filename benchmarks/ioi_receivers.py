"""One draw's keys/values step, receiver by receiver: where a sender's paths through different S-inhibition
receivers cancel (the diagnostic behind `DiscoveryConfig.named_at_floor`, RESULTS.md, 2026-12-08).

Runs discovery's first two steps on the draw's discovery prompts (as `interp ioi --seed S` draws them) with the
rule given (--no-named-at-floor: the share for every head, the rule before 2026-12-08), then path-patches every
head below the S-inhibition heads to their keys and values at S2: all receivers at once, all but each one, and
each one alone; prints the chosen senders' effects and each grid's largest, and saves the grids.

    python benchmarks/ioi_receivers.py --seed 19 --no-named-at-floor [--heads 8.1,5.6,15.7,17.4] [--out FILE.pt]
"""

from __future__ import annotations

import argparse

import torch

from interp import load
from interp.circuits.discover import N_DISCOVERY, DiscoveryConfig, DiscoverySteps, admitted
from interp.circuits.path import Receivers
from interp.data.ioi import ioi_split


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=19)
    p.add_argument("--named-at-floor", default=True, action=argparse.BooleanOptionalAction)
    p.add_argument("--heads", default="8.1,5.6,15.7,17.4,17.5,11.8,16.1,2.4")
    p.add_argument("--out", default=None)
    a = p.parse_args()
    model = load(a.model, device=a.device)
    ds = ioi_split(model, N_DISCOVERY, N_DISCOVERY, a.seed).score
    cfg = DiscoveryConfig(named_at_floor=a.named_at_floor)
    st = DiscoverySteps(model, ds, cfg, None)
    st.direct()
    print("direct heads:", ", ".join(f"{layer}.{h} ({c})" for (layer, h), c in st.ranked))
    st.admit(st.patch(2, "mover queries", Receivers(st.of("name mover", "s suppression"), "q", "END")), lambda h: "s-inhibition")
    sinh = st.of("s-inhibition")
    print("S-inhibition receivers:", ", ".join(f"{layer}.{h}" for layer, h in sinh))
    sets = {"all": sinh} | {f"all but {r[0]}.{r[1]}": [x for x in sinh if x != r] for r in sinh if len(sinh) > 1}
    sets |= {f"{r[0]}.{r[1]} alone": [r] for r in sinh}
    focus = [tuple(int(x) for x in h.split(".")) for h in a.heads.split(",")]
    grids = {}
    for name, recs in sets.items():
        g = st.patch(3, name, Receivers(recs, "kv", "S2"))
        grids[name] = g
        print(f"{name:>16}: largest {float(g.abs().nan_to_num(0).max()):.3f}, admits {len(admitted(g, cfg, set()))}; "
              + " ".join(f"{x}.{y} {float(g[x, y]):+.3f}" for x, y in focus), flush=True)  # fmt: skip
    if a.out:
        torch.save(grids, a.out)


if __name__ == "__main__":
    main()
