"""Where IOI faithfulness is lost, by position rule and by template (a diagnostic: nothing is chosen by it).

The circuit discovered on 24 prompts (seed 0) is evaluated on the discovery prompts and on NH held-out
prompts (default 256) with its heads kept at other sets of positions than their classes'
(interp.circuits.head_configs.CLASS_POSITIONS), per base template of each part: [F(C)/F(M), F(M)].

    DEV=cuda NH=256 OUT=benchmarks/results python benchmarks/ioi_position_rules.py
"""

import importlib
import json
import os
import time

import torch

from interp import load
from interp.circuits.ablate import AblationPlan, Ablator
from interp.circuits.head_configs import CLASS_POSITIONS, mean_replacement
from interp.circuits.types import Graph
from interp.data.ioi import ioi_split

E = importlib.import_module("interp.circuits.evaluate")
D = importlib.import_module("interp.circuits.discover")
t0 = time.time()
model = load("smollm2-135m", device=os.environ.get("DEV", "cuda"))
split = ioi_split(model, 24, int(os.environ.get("NH", "256")), 0)
disc = D.discover(model, split.score, D.DiscoveryConfig(position_threshold=None))  # class positions, as recorded
circuit = sorted({h for hs in disc.classes.values() for h in hs})
cls_of = {h: c for c, hs in disc.classes.items() for h in hs}
print("heads", len(circuit), time.time() - t0, flush=True)


def rows_for(ds, means):
    """[F(C)/F(M), F(M)] over all prompts and per base template, for each position rule."""
    g = Graph.of(model)
    B, P = ds.clean.shape
    L, H = model.info.n_layers, model.info.n_heads
    pos, ar = ds.positions, torch.arange(P)

    def mask_at(names):
        m = torch.zeros(B, P, dtype=torch.bool)
        for n in names:
            m |= pos[n][:, None] == ar
        return m

    def plan(rule):
        w = torch.zeros(len(g.writers), B, P, dtype=torch.bool)  # True = ablated (heads only)
        for layer in range(L):
            for h in range(H):
                w[g.first_head(layer) + h] = ~rule(cls_of[(layer, h)]) if (layer, h) in cls_of else True
        return AblationPlan(writers=w)

    cls = lambda c: mask_at([CLASS_POSITIONS[c]])
    after = lambda name: ar[None] > pos[name][:, None]
    rules = {
        "class": cls,
        "all": lambda c: torch.ones(B, P, dtype=torch.bool),
        "named": lambda c: mask_at(["IO", "S1", "S1+1", "S2", "END"]),
        **{f"class+{n}": (lambda c, n=n: cls(c) | mask_at([n])) for n in ("END", "S2", "S1+1", "IO", "S1")},
        "from S1 on": lambda c: ar[None] >= pos["S1"][:, None],
        "from S2 on": lambda c: ar[None] >= pos["S2"][:, None],
        "class+after S2": lambda c: cls(c) | after("S2"),
    }
    full = AblationPlan(writers=torch.zeros(len(g.writers), B, P, dtype=torch.bool))
    ab = Ablator(model, ds, graph=g, replacement=mean_replacement(means))
    rows = ab.run_many([full] + [plan(r) for r in rules.values()], stacked=True).float().cpu()
    tmpl = (ds.groups // 2).tolist()
    res = {}
    for i, rn in enumerate(rules):
        per = {}
        for t in sorted(set(tmpl)):
            sel = torch.tensor([x == t for x in tmpl])
            per[str(t)] = [
                round(float(rows[i + 1][sel].mean() / rows[0][sel].mean()), 3),
                round(float(rows[0][sel].mean()), 2),
            ]
        res[rn] = {"all": round(float(rows[i + 1].mean() / rows[0].mean()), 3), "per_template": per}
    return res


out = {}
for name, ds in (("discovery", split.score), ("heldout", split.heldout)):
    out[name] = rows_for(ds, E.abc_means(model, ds))
    for rn, r in out[name].items():
        print(name, rn, r["all"], json.dumps(r["per_template"]), flush=True)
print("time", time.time() - t0)
with open(os.environ.get("OUT", "/tmp") + "/ioi_position_rules.json", "w") as f:
    json.dump(out, f, indent=1)
