"""Evaluating a circuit on held-out prompts, the way Wang et al. 2022 (section 4) do.

F(X) is the mean logit diff when every head is mean-ablated except X's heads *at the positions
where they work*: its output (hook_z) is replaced, at each position, by its mean over ABC
prompts of the same template (`abc_means`: at least 64 fresh ABC prompts per template;
templates differ in length, so means are taken per template and position). Each class of the
circuit is kept only at its position (`CLASS_POSITIONS`: name movers, S-inhibition and the other
direct classes at END, induction and duplicate-token heads at S2, previous-token heads at
S1+1; a class not in that table is kept everywhere) and mean-ablated elsewhere, as the paper's
code does. Then
- faithfulness = F(C) / F(M) (interp.circuits.types.logit_diff_ratio, Wang et al.'s formula), the
  circuit's share of the full model's logit diff; the same with every circuit head kept at every
  position is the second figure (`faithfulness_all_positions`);
- the curve: with discovery's order of the heads, F(first k heads) / F(M) for every k (each head
  kept at its class's positions), what each head buys;
- completeness: for subsets K of the circuit (nothing, each class, random halves, and the K of
  Wang et al.'s greedy search, `greedy_subset`: up to 5 heads, each step after the first among the 8
  heads that opened the widest gaps alone), |F(C \\ K) - F(M \\ K)| should be small; incompleteness
  is the largest gap over |F(M)|;
- minimality: for each head v, max over K in {nothing, the rest of v's class} of
  |F(C \\ (K + v)) - F(C \\ K)| / |F(C)|; v passes when the lower end of its interval is at least
  `min_minimality`. Its noise level: |F(C + r) - F(C)| / |F(C)| for `n_noise` random heads r outside
  the circuit (kept at every position), what a head that does nothing moves the figure by.
Every figure carries a 95% bootstrap interval over the held-out prompts (interp.stats): the
prompts are resampled and the figure (a ratio, a max over K) recomputed on each resample.

How. Every configuration (which heads are kept where) is a plan for the one ablation engine
(interp.circuits.ablate): its heads replaced at the source, by the ABC means, wherever the
configuration ablates them. The engine replays each plan from the first layer and the first
position where it differs from the full model or from the circuit (both run first, as bases);
`ablated_logit_diffs_reference` runs the same plans through the plain reference (one hooked forward
pass of the whole model each), which tests compare the engine with.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from jaxtyping import Float
from torch import Tensor

from interp import hooks
from interp.circuits.head_configs import (
    CLASS_POSITIONS,
    Configs,
    ablated_logit_diffs,
    head_mask,
    head_positions,
)  # fmt: skip
from interp.circuits.types import logit_diff_ratio
from interp.data.ioi import make_ioi, templates_used
from interp.data.task import Task
from interp.errors import WorkbenchError
from interp.stats import N_BOOT, Interval, interval, resample_indices, resampled_means
from interp.types import Head, Progress

if TYPE_CHECKING:
    from interp.models import Model

N_ABC = 64  # ABC prompts per template behind each mean (the floor; Wang et al. average a full ABC set)
N_NOISE = 8  # heads outside the circuit whose addition gives minimality's noise level
GREEDY_SIZE = 5  # steps of the greedy search for completeness's worst subset (0: none)
GREEDY_POOL = 8  # its steps after the first try only the heads whose removal alone opened the widest gaps
MIN_MINIMALITY = 0.05  # a head is minimal-necessary when its interval's lower end is >= this share of F(C)


# -- the ABC means ----------------------------------------------------------------------------


@torch.no_grad()
def abc_means(
    model: Model, ds: Task, n_abc: int = N_ABC, seed: int | None = None, batch_size: int = 64,
    progress: Progress | None = None,
) -> dict[int, Float[Tensor, "batch pos head d_head"]]:
    """Per layer, each prompt's mean-ablation value of hook_z: the mean over `n_abc` fresh ABC
    prompts of that prompt's base template (its ABBA and BABA forms give the same ABC sentences:
    three unrelated names in the same slots), position by position. The ABC prompts use the IOI
    task's own templates and names (its part of the split, `ds.source`), never the other part's."""
    if n_abc < 1:
        raise WorkbenchError(f"the ABC means need at least 1 prompt per template (got {n_abc})")
    if ds.groups is None or ds.source.get("generator") != "ioi":
        raise WorkbenchError(f"task {ds.name!r} was not drawn by interp.data.ioi.make_ioi: no templates to draw ABC prompts from")
    L = model.info.n_layers
    base_of = ds.groups // 2  # base template of each prompt
    used = sorted(set(base_of.tolist()))
    ids = [2 * b + (i % 2) for b in used for i in range(n_abc)]  # alternate the two orders
    templates, names = ds.source.get("templates"), ds.source.get("names")
    ref = make_ioi(model, len(ids), seed=(ds.source.get("seed", 0) + 7919) if seed is None else seed, template_ids=ids,
                   templates=templates or None, names=names or None)  # fmt: skip
    slot = {b: i for i, b in enumerate(used)}
    ref_slot = torch.tensor([slot[t // 2] for t in ids])
    T = max(ds.clean.shape[1], ref.clean.shape[1])
    sums: dict[int, Tensor] = {}
    chunks = list(range(0, len(ids), batch_size))
    for i, start in enumerate(chunks):
        rows = slice(start, start + batch_size)
        tokens, where = ref.corrupted[rows], ref_slot[rows]

        def add(z: Tensor, hook, layer: int, where=where) -> None:
            if layer not in sums:
                sums[layer] = z.new_zeros(len(used), T, *z.shape[2:], dtype=torch.float32)
            sums[layer][:, : z.shape[1]].index_add_(0, where.to(z.device), z.float())

        edits = [(hooks.name("z", layer), lambda z, hook, layer=layer: add(z, hook, layer)) for layer in range(L)]
        hooks.run_until(model, tokens, edits, last=hooks.name("z", L - 1))
        if progress:
            progress(i + 1, len(chunks), f"ABC means ({n_abc} prompts per template)")
    for b in used:
        n = set(ref.lengths[ref_slot == slot[b]].tolist()) | set(ds.lengths[base_of == b].tolist())
        if len(n) != 1:
            raise WorkbenchError(f"template {templates[b]!r} gives prompts of different lengths; drop it")
    pick = torch.tensor([slot[b] for b in base_of.tolist()])
    width = ds.clean.shape[1]
    return {layer: (s[pick.to(s.device), :width] / n_abc).to(model.dtype) for layer, s in sums.items()}



def greedy_subset(model: Model, ds: Task, means: dict[int, Tensor], classes: dict[str, list[Head]], size: int,
                  idx: Tensor, progress: Progress | None = None, pool: int = GREEDY_POOL,
                  alone: dict[Head, Tensor] | None = None, places: dict[Head, list[str]] | None = None):  # fmt: skip
    """Wang et al.'s greedy search for the subset K that completeness fails worst on: K starts empty
    and, up to `size` times, takes the head whose removal (with K's) makes |F(C \\ K) - F(M \\ K)|
    largest on the mean over `ds`. The first step tries every circuit head; the later ones only the
    `pool` heads whose removal alone opened the widest gaps (our cost bound: a step costs two runs per
    candidate; pool >= the circuit's size is the unbounded search). `alone` may hold the first step's
    per-prompt rows [F(C \\ v), F(M \\ v)] per head v, when the caller already ran them.
    (K, (F(C \\ K), its resamples), (F(M \\ K), its resamples)), resampled with the bootstrap rows
    `idx` (K itself is chosen once, on all prompts). Heads work at their classes' positions, or at
    `places` where given."""
    circuit = sorted({h for hs in classes.values() for h in hs})
    positioned = head_mask(model, [h for c, hs in classes.items() if c in CLASS_POSITIONS for h in hs])
    C = head_mask(model, circuit)
    pos = head_positions(model, ds, classes, places)

    def run(K: list[Head], cand: list[Head]) -> Tensor:  # [candidate 2 batch]: F(C \ K+v), F(M \ K+v)
        gone = head_mask(model, K)  # the bases are C \ K and M \ K: each candidate differs from one by v alone
        keep_all, keep_at = [~gone, C & ~positioned & ~gone], [torch.zeros_like(C), positioned & ~gone]
        for v in cand:
            k = head_mask(model, K + [v])
            keep_all += [C & ~positioned & ~k, ~k]
            keep_at += [positioned & ~k, torch.zeros_like(C)]
        rows = ablated_logit_diffs(model, ds, means, Configs(torch.stack(keep_all), torch.stack(keep_at), pos),
                                   bases=[0, 1])[2:]  # fmt: skip
        return rows.view(len(cand), 2, -1)

    def gaps(rows: Tensor) -> Tensor:
        return (rows[:, 0].double().mean(-1) - rows[:, 1].double().mean(-1)).abs()

    steps = min(size, len(circuit))
    rows = torch.stack([alone[v] for v in circuit]) if alone is not None else run([], circuit)
    g = gaps(rows)
    top = [circuit[i] for i in g.argsort(descending=True).tolist()][: max(pool, 1)]
    K, best = [circuit[int(g.argmax())]], rows[int(g.argmax())]
    if progress:
        progress(1, steps, "greedy search for completeness's worst K")
    for step in range(1, steps):
        cand = [v for v in top if v not in K]
        if not cand:
            break
        rows = run(K, cand)
        i = int(gaps(rows).argmax())
        K.append(cand[i])
        best = rows[i]
        if progress:
            progress(step + 1, steps, "greedy search for completeness's worst K")
    boot = resampled_means(best, idx)
    mean = best.double().mean(1)
    return K, (mean[0], boot[0]), (mean[1], boot[1])


# -- the evaluation ---------------------------------------------------------------------------------


@dataclass
class Evaluation:
    """How well a circuit explains IOI on held-out prompts; every figure with its 95% interval."""

    model_logit_diff: Interval  # F(M): the full model
    circuit_logit_diff: Interval  # F(C): each class kept at its positions, everything else mean-ablated
    faithfulness: Interval  # F(C) / F(M)
    n_prompts: int  # held-out prompts used
    circuit_logit_diff_all_positions: Interval | None = None  # F(C) with circuit heads kept at every position
    faithfulness_all_positions: Interval | None = None  # the same divided by F(M)
    n_abc: int = N_ABC  # ABC prompts per template behind the means
    templates: list[str] = field(default_factory=list)  # the base templates the held-out prompts use
    names: list[str] = field(default_factory=list)  # the names they draw from
    completeness: list[dict] = field(default_factory=list)  # per K: removed, n_removed, circuit F(C\K), model F(M\K), gap (+ interval)
    incompleteness: Interval | None = None  # max gap / |F(M)| over the K tried
    minimality: dict[str, dict] = field(default_factory=dict)  # "layer.head" -> value, lo, hi (share of F(C)), passes
    min_minimality: float = MIN_MINIMALITY  # the threshold a head's lower end must reach
    curve: list[dict] = field(default_factory=list)  # k, head, class, faithfulness (+ lo, hi) of the first k ranked heads
    noise: dict = field(default_factory=dict)  # minimality's noise level: |F(C + r) - F(C)| / |F(C)| for heads r outside C
    places: dict[str, list[str]] | None = None  # "layer.head" -> segments it was kept at (None: its class's position)
    faithfulness_class_positions: Interval | None = None  # with places: the same circuit at its classes' positions
    by_template: list[dict] = field(default_factory=list)  # per base template: prompts, F(M), F(C), F(C)/F(M)


def noise_heads(model: Model, circuit: list[Head], n: int, seed: int) -> list[Head]:
    """`n` heads outside the circuit, drawn with `seed`: minimality's noise level."""
    outside = [(layer, h) for layer in range(model.info.n_layers) for h in range(model.info.n_heads)
               if (layer, h) not in set(circuit)]  # fmt: skip
    return sorted(random.Random(seed + 1).sample(outside, min(n, len(outside))))


def configurations(model: Model, ds: Task, classes: dict[str, list[Head]], checks: bool, n_random: int, seed: int,
                   ranked: list[Head] | None = None, noise: list[Head] = (), greedy: bool = False,
                   places: dict[Head, list[str]] | None = None):  # fmt: skip
    """(names, Configs): model, circuit (per position: at its heads' `places` where given, else at their
    classes' positions), circuit at every position, the first k heads
    of `ranked` for every k ("first k"), and the checks': completeness's subsets, minimality's
    removals, the circuit plus each `noise` head (kept at every position: "C+r") and, with `greedy`,
    the model without each circuit head ("M-v": the greedy search's first step)."""
    circuit = sorted({h for hs in classes.values() for h in hs})
    positioned = head_mask(model, [h for c, hs in classes.items() if c in CLASS_POSITIONS for h in hs])
    C = head_mask(model, circuit)
    everywhere = torch.ones_like(C)
    none = torch.zeros_like(C)
    rows: list[tuple[str, Tensor, Tensor]] = [("model", everywhere, none), ("circuit", C & ~positioned, positioned),
                                              ("circuit, all positions", C, none)]  # fmt: skip
    for k in range(1, len(ranked or []) + 1):
        first = head_mask(model, ranked[:k])
        rows.append((f"first {k}", first & ~positioned, first & positioned))
    subsets: list[tuple[str, list[Head]]] = []
    if checks:
        for r in noise:
            rows.append((f"C+r {r}", (C | head_mask(model, [r])) & ~positioned, positioned))
        rng = random.Random(seed)
        subsets = [("nothing", [])] + [(f"class {c}", hs) for c, hs in classes.items()]
        subsets += [(f"random {i}", [h for h in circuit if rng.random() < 0.5]) for i in range(n_random)]
        for name, K in subsets:
            k = head_mask(model, K)
            rows += [(f"C-{name}", C & ~positioned & ~k, positioned & ~k), (f"M-{name}", ~k, none)]
        for hs in classes.values():
            for v in hs:
                for name, K in (("C-K", [h for h in hs if h != v]), ("C-K-v", hs), ("C-v", [v])):
                    k = head_mask(model, K)
                    rows.append((f"{name} {v}", C & ~positioned & ~k, positioned & ~k))
                if greedy:  # the greedy search's first step: F(M \ v) beside F(C \ v)
                    rows.append((f"M-v {v}", ~head_mask(model, [v]), none))
    # the same configuration under several names runs once
    unique: dict[tuple, int] = {}
    index: dict[str, int] = {}
    keep_all, keep_at = [], []
    for name, a, b in rows:
        key = (a.numpy().tobytes(), b.numpy().tobytes())
        if key not in unique:
            unique[key] = len(keep_all)
            keep_all.append(a)
            keep_at.append(b)
        index[name] = unique[key]
    configs = Configs(torch.stack(keep_all), torch.stack(keep_at), head_positions(model, ds, classes, places))
    return index, configs, subsets


@torch.no_grad()
def evaluate(
    model: Model,
    ds: Task,
    classes: dict[str, list[Head]],
    checks: bool = True,
    n_random: int = 4,
    n_abc: int = N_ABC,
    seed: int = 0,
    min_minimality: float = MIN_MINIMALITY,
    n_boot: int = N_BOOT,
    progress: Progress | None = None,
    ranked: list[tuple[Head, str]] | None = None,
    n_noise: int = N_NOISE,
    greedy_size: int = GREEDY_SIZE,
    places: dict[Head, list[str]] | None = None,
) -> Evaluation:
    """Faithfulness (and, with checks=True, completeness and minimality) of a circuit on `ds`,
    each class kept at its positions (see the module docstring) or, with `places`, each head at the
    segments found for it (interp.circuits.positions; then the class-positions figure is given
    beside it), with bootstrap intervals; with `ranked` (heads in discovery's order) the
    faithfulness of the first k heads for every k."""
    circuit = sorted({h for hs in classes.values() for h in hs})
    if not circuit:
        raise WorkbenchError(
            "the circuit is empty: nothing to evaluate (discovery found no heads; lower the thresholds)"
        )
    means = abc_means(model, ds, n_abc, progress=progress)
    order = [h for h, _ in ranked or [] if h in set(circuit)]
    noise = noise_heads(model, circuit, n_noise, seed) if checks else []
    index, configs, subsets = configurations(model, ds, classes, checks, n_random, seed, order, noise, greedy_size > 0,
                                             places)  # fmt: skip
    per_prompt = ablated_logit_diffs(model, ds, means, configs, bases=[index["model"], index["circuit"]],
                                     progress=progress)  # [config batch]
    if places is not None:  # the circuit at its classes' positions, beside: that one configuration alone
        at, by_class, _ = configurations(model, ds, classes, False, 0, seed)
        row = slice(at["circuit"], at["circuit"] + 1)
        index["circuit, class positions"] = len(per_prompt)
        one = Configs(by_class.keep_all[row], by_class.keep_at[row], by_class.head_at)
        per_prompt = torch.cat([per_prompt, ablated_logit_diffs(model, ds, means, one)])
    idx = resample_indices(len(ds), n_boot, seed)
    boot = resampled_means(per_prompt, idx)  # [config boot]
    mean = per_prompt.double().mean(1)

    def F(name: str) -> tuple[Tensor, Tensor]:
        return mean[index[name]], boot[index[name]]

    (m, mb), (c, cb), (a, ab) = F("model"), F("circuit"), F("circuit, all positions")
    ev = Evaluation(interval(m, mb), interval(c, cb), interval(logit_diff_ratio(c, m), logit_diff_ratio(cb, mb)),
                    len(ds), interval(a, ab), interval(logit_diff_ratio(a, m), logit_diff_ratio(ab, mb)), n_abc,
                    templates_used(ds), list(ds.source.get("names", [])), min_minimality=min_minimality)  # fmt: skip
    ev.by_template = _by_template(ds, per_prompt[index["model"]], per_prompt[index["circuit"]])
    if places is not None:
        k, kb = F("circuit, class positions")
        ev.places = {f"{h[0]}.{h[1]}": list(v) for h, v in sorted(places.items())}
        ev.faithfulness_class_positions = interval(logit_diff_ratio(k, m), logit_diff_ratio(kb, mb))
    kind = dict(ranked or [])
    for k, head in enumerate(order, 1):
        fk, fkb = F(f"first {k}")
        ev.curve.append({"k": k, "head": list(head), "class": kind[head],
                         **interval(logit_diff_ratio(fk, m), logit_diff_ratio(fkb, mb)).to_dict()})  # fmt: skip
    if not checks:
        return ev
    if noise:
        level = {f"{r[0]}.{r[1]}": float((F(f"C+r {r}")[0] - c).abs() / c.abs()) for r in noise}
        ev.noise = {"heads": [list(r) for r in noise], "per_head": level, "mean": sum(level.values()) / len(level),
                    "max": max(level.values())}  # fmt: skip
    gaps = [_gap_row(name, K, F(f"C-{name}"), F(f"M-{name}")) for name, K in subsets]
    if greedy_size > 0:
        alone = {v: per_prompt[[index[f"C-v {v}"], index[f"M-v {v}"]]] for v in circuit}
        K, in_circuit, in_model = greedy_subset(model, ds, means, classes, greedy_size, idx, progress, alone=alone,
                                                places=places)  # fmt: skip
        gaps.append(_gap_row("greedy", K, in_circuit, in_model, heads=True))
    ev.completeness = [row for row, _, _ in gaps]
    ev.incompleteness = interval(torch.stack([g for _, g, _ in gaps]).max() / m.abs(),
                                 torch.stack([gb for _, _, gb in gaps]).max(0).values / mb.abs())  # fmt: skip
    ev.minimality = _minimality(F, classes, (c, cb), min_minimality)
    return ev


def _by_template(ds: Task, model_rows: Tensor, circuit_rows: Tensor) -> list[dict]:
    """F(M), F(C) and their ratio over each base template's prompts (no interval: a handful of prompts each)."""
    base, names = ds.groups // 2, ds.source.get("templates") or []
    out = []
    for b in sorted(set(base.tolist())):
        sel = base == b
        m, c = float(model_rows[sel].double().mean()), float(circuit_rows[sel].double().mean())
        out.append({"template": names[b] if b < len(names) else str(b), "n": int(sel.sum()), "model": m, "circuit": c,
                    "faithfulness": logit_diff_ratio(c, m) if m else float("nan")})  # fmt: skip
    return out


def _gap_row(name: str, K: list[Head], in_circuit: tuple[Tensor, Tensor], in_model: tuple[Tensor, Tensor],
             heads: bool = False) -> tuple[dict, Tensor, Tensor]:  # fmt: skip
    """Completeness for one removed subset K: its table row, |F(C \\ K) - F(M \\ K)| and its resamples."""
    (ck, ckb), (mk, mkb) = in_circuit, in_model
    g, gb = (ck - mk).abs(), (ckb - mkb).abs()
    gi = interval(g, gb)
    row = {"removed": name, **({"heads": [list(h) for h in K]} if heads else {}), "n_removed": len(K),
           "circuit": float(ck), "model": float(mk), "gap": gi.value, "gap_lo": gi.lo, "gap_hi": gi.hi}  # fmt: skip
    return row, g, gb


def _minimality(F, classes: dict[str, list[Head]], circuit: tuple[Tensor, Tensor], min_minimality: float) -> dict:
    """Per head v: max over K in {nothing, the rest of v's class} of |F(C \\ (K + v)) - F(C \\ K)| / |F(C)|,
    with its interval, and whether the lower end reaches `min_minimality`."""
    c, cb = circuit
    out = {}
    for hs in classes.values():
        for v in hs:
            (kv, kvb), (k, kb), (only, onlyb) = F(f"C-K-v {v}"), F(f"C-K {v}"), F(f"C-v {v}")
            mi = interval(torch.maximum((kv - k).abs(), (only - c).abs()) / c.abs(),
                          torch.maximum((kvb - kb).abs(), (onlyb - cb).abs()) / cb.abs())  # fmt: skip
            out[f"{v[0]}.{v[1]}"] = {**mi.to_dict(), "passes": mi.lo >= min_minimality}
    return out
