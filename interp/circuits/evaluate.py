"""Evaluating a circuit on held-out prompts, the way Wang et al. 2022 (section 4) do.

F(X) is the mean logit diff when every head is mean-ablated except X's heads *at the positions
where they work*: its output (hook_z) is replaced, at each position, by its mean over ABC
prompts of the same template (`abc_means`: at least 64 fresh ABC prompts per template;
templates differ in length, so means are taken per template and position). Each class of the
circuit is kept only at its position (`CLASS_POSITIONS`: name movers, S-inhibition and the other
direct classes at END, induction and duplicate-token heads at S2, previous-token heads at
S1+1; a class not in that table is kept everywhere) and mean-ablated elsewhere, as the paper's
code does. Then
- faithfulness = F(C) / F(M), the circuit's share of the full model's logit diff; the same with
  every circuit head kept at every position is the second figure (`faithfulness_all_positions`);
- completeness: for subsets K of the circuit (nothing, each class, random halves),
  |F(C \\ K) - F(M \\ K)| should be small; incompleteness is the largest gap over |F(M)|;
- minimality: for each head v, max over K in {nothing, the rest of v's class} of
  |F(C \\ (K + v)) - F(C \\ K)| / |F(C)|; v passes when the lower end of its interval is at least
  `min_minimality`.
Every figure carries a 95% bootstrap interval over the held-out prompts (interp.stats): the
prompts are resampled and the figure (a ratio, a max over K) recomputed on each resample.

Speed. Every configuration (which heads are kept where) is one block of rows in a batched
pass. A configuration that removes K from the circuit is identical to the circuit up to K's
first layer, and one that removes K from the model identical to the clean run up to there, so
each is replayed only from that layer on, from the residual stream of its base run (the clean
run, or the circuit's run), with interp.circuits.replay's pieces (norms, projections, rotary,
causal attention, MLPs) over whole sequences. `ablated_logit_diffs_reference` is the plain
version (one hooked forward pass of the whole model per configuration) the tests compare it
with; the fast path checks itself against the bridge on the circuit's own run and falls back
to the plain one if the replay does not reproduce it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING

import einops
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from interp import hooks
from interp.circuits.metrics import logit_diff
from interp.circuits.replay import PatchCaches, Replay, gather_pos, window
from interp.data.ioi import IOIDataset, make_ioi
from interp.errors import WorkbenchError
from interp.stats import N_BOOT, Interval, interval, resample_indices, resampled_means
from interp.types import Head, Progress

if TYPE_CHECKING:
    from interp.models import Model

N_ABC = 64  # ABC prompts per template behind each mean (the floor; Wang et al. average a full ABC set)
MIN_MINIMALITY = 0.05  # a head is minimal-necessary when its interval's lower end is >= this share of F(C)
# where each class works (Wang et al.'s code keeps each class's heads at these positions only)
CLASS_POSITIONS: dict[str, str] = {
    "name mover": "END", "s suppression": "END", "negative name mover": "END", "backup name mover": "END",
    "other direct": "END", "s-inhibition": "END", "induction": "S2", "duplicate token": "S2",
    "previous token": "S1+1",
}  # fmt: skip


# -- the ABC means ----------------------------------------------------------------------------


@torch.no_grad()
def abc_means(
    model: Model, ds: IOIDataset, n_abc: int = N_ABC, seed: int | None = None, batch_size: int = 64,
    progress: Progress | None = None,
) -> dict[int, Float[Tensor, "batch pos head d_head"]]:
    """Per layer, each prompt's mean-ablation value of hook_z: the mean over `n_abc` fresh ABC
    prompts of that prompt's base template (its ABBA and BABA forms give the same ABC sentences:
    three unrelated names in the same slots), position by position. The ABC prompts use `ds`'s
    own templates and names (its part of the split), never the other part's."""
    if n_abc < 1:
        raise WorkbenchError(f"the ABC means need at least 1 prompt per template (got {n_abc})")
    L = model.info.n_layers
    base_of = ds.template_ids // 2  # base template of each prompt
    used = sorted(set(base_of.tolist()))
    ids = [2 * b + (i % 2) for b in used for i in range(n_abc)]  # alternate the two orders
    ref = make_ioi(model, len(ids), seed=(ds.seed + 7919) if seed is None else seed, template_ids=ids,
                   templates=ds.base_templates or None, names=ds.names or None)  # fmt: skip
    slot = {b: i for i, b in enumerate(used)}
    ref_slot = torch.tensor([slot[t // 2] for t in ids])
    T = max(ds.tokens.shape[1], ref.tokens.shape[1])
    sums: dict[int, Tensor] = {}
    chunks = list(range(0, len(ids), batch_size))
    for i, start in enumerate(chunks):
        rows = slice(start, start + batch_size)
        tokens, where = ref.corrupted_tokens[rows], ref_slot[rows]

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
            raise WorkbenchError(f"template {ds.base_templates[b]!r} gives prompts of different lengths; drop it")
    pick = torch.tensor([slot[b] for b in base_of.tolist()])
    width = ds.tokens.shape[1]
    return {layer: (s[pick.to(s.device), :width] / n_abc).to(model.dtype) for layer, s in sums.items()}


# -- configurations: which heads are kept clean, and where ----------------------------------------


@dataclass
class Configs:
    """A stack of configurations. In configuration c, head (l, h) keeps its clean output at every
    position where keep_all[c, l, h], only at its own position head_pos[l, h] (per prompt) where
    keep_at[c, l, h], and is mean-ablated everywhere else."""

    keep_all: Bool[Tensor, "config layer head"]
    keep_at: Bool[Tensor, "config layer head"]
    head_pos: Int[Tensor, "layer head batch"]  # each head's working position per prompt (-1: none)

    def __len__(self) -> int:
        return self.keep_all.shape[0]

    def ablated(self, layer: int, rows: slice | Tensor, pos: int | Int[Tensor, "batch win"]
                ) -> Bool[Tensor, "config batch win head"]:
        """True where configurations `rows` mean-ablate a head of `layer`, at positions `pos`
        (per prompt; an int n means positions 0..n-1 of every prompt)."""
        every = self.keep_all[rows, layer][:, None, None, :]
        at = self.keep_at[rows, layer][:, None, None, :]
        own = self.head_pos[layer].T[None, :, None, :]  # [1 batch 1 head]
        if isinstance(pos, int):
            pos = torch.arange(pos)[None].expand(own.shape[1], -1)
        here = pos.to(own.device)[None, :, :, None] == own
        return ~(every | (at & here.to(at.device)))

    def first_position(self, base: int, n_pos: int) -> Int[Tensor, "config batch"]:
        """Per prompt, the first position where each configuration differs from `base` (n_pos
        where it never does): a head kept (or ablated) everywhere in one and not in the other
        differs from position 0, one kept only at its own position in one and ablated in the
        other differs from that position on."""
        state = torch.where(self.keep_all, 2, torch.where(self.keep_at, 1, 0))  # [config layer head]
        differ = state != state[base]
        everywhere = differ & ((state == 2) | (state[base] == 2))
        at_own = differ & ~everywhere  # kept at its position vs ablated
        cand = torch.where(at_own[..., None], self.head_pos[None], n_pos)  # [config layer head batch]
        first = cand.flatten(1, 2).min(1).values
        return torch.where(everywhere.flatten(1).any(1)[:, None], 0, first)

    def first_difference(self, base: int) -> Int[Tensor, " config"]:
        """The first layer where each configuration differs from configuration `base` (n_layers
        where it never does)."""
        differ = (self.keep_all != self.keep_all[base]) | (self.keep_at != self.keep_at[base])  # [c l h]
        per_layer = differ.any(-1)
        L = per_layer.shape[1]
        first = torch.where(per_layer, torch.arange(L)[None], torch.full_like(per_layer, L, dtype=torch.long))
        return first.min(1).values


def head_positions(model: Model, ds: IOIDataset, classes: dict[str, list[Head]]) -> Int[Tensor, "layer head batch"]:
    """Each circuit head's working position per prompt (its class's `CLASS_POSITIONS`), -1 elsewhere."""
    out = torch.full((model.info.n_layers, model.info.n_heads, len(ds)), -1, dtype=torch.long)
    for c, heads in classes.items():
        if c in CLASS_POSITIONS:
            for layer, h in heads:
                out[layer, h] = ds.positions[CLASS_POSITIONS[c]]
    return out


def head_mask(model: Model, heads: list[Head]) -> Bool[Tensor, "layer head"]:
    m = torch.zeros(model.info.n_layers, model.info.n_heads, dtype=torch.bool)
    for layer, h in heads:
        m[layer, h] = True
    return m


# -- running configurations ------------------------------------------------------------------------


def _means_hook(configs: Configs, rows: slice, means: dict[int, Tensor], B: int, layer: int):
    def hook(z: Tensor, hook) -> Tensor:
        n, T = z.shape[0] // B, z.shape[1]
        shaped = z.view(n, B, T, *z.shape[2:])
        mask = configs.ablated(layer, rows, T).to(z.device)[..., None]
        return torch.where(mask, means[layer][None, :, :T].to(z.dtype), shaped).view(z.shape)

    return hook


@torch.no_grad()
def ablated_logit_diffs_reference(
    model: Model, ds: IOIDataset, means: dict[int, Tensor], configs: Configs
) -> Float[Tensor, "config batch"]:
    """Plain and obvious: one hooked forward pass of the whole model per configuration."""
    B = len(ds)
    out = []
    for c in range(len(configs)):
        rows = slice(c, c + 1)
        edits = [(hooks.name("z", layer), _means_hook(configs, rows, means, B, layer)) for layer in range(model.info.n_layers)]
        out.append(logit_diff(model.run_with_hooks(ds.tokens, fwd_hooks=edits), ds).float().cpu())
    return torch.stack(out)


@dataclass
class _Base:
    """A base configuration's run through the bridge: what its dependents are replayed from."""

    resid: dict[int, Tensor]  # layer -> residual stream entering it [batch pos d_model]
    tables: PatchCaches  # its k (rotated) / v per layer and the rotary tables, as Replay reads them
    metric: Tensor  # per-prompt logit diff [batch]


class _Replayer:
    """Replays configurations from a layer and a position on, from a base run: positions before
    each prompt's start keep the base's keys and values (they are the same there), positions
    from the start to END are recomputed with each configuration's own ablations."""

    def __init__(self, model: Model, ds: IOIDataset, means: dict[int, Tensor], configs: Configs):
        self.rp = Replay.of(model)
        self.model, self.ds, self.means, self.configs = model, ds, means, configs
        dev = ds.tokens.device
        self.io, self.s, self.end = ds.io_ids.to(dev), ds.s_ids.to(dev), ds.positions["END"].to(dev)
        self.T = ds.tokens.shape[1]

    def base_run(self, c: int) -> _Base:
        L, B, rp = self.rp.n_layers, len(self.ds), self.rp
        got: dict[str, Tensor] = {}

        def keep(x: Tensor, hook, key: str) -> None:
            got[key] = x.detach()

        k_kind = "rot_k" if rp.rotary else "k"
        names = hooks.names("resid_pre", range(L)) + hooks.names(k_kind, range(L)) + hooks.names("v", range(L))
        names += hooks.names("cos", range(L)) + hooks.names("sin", range(L)) if rp.rotary else []
        edits = [(hooks.name("z", layer), _means_hook(self.configs, slice(c, c + 1), self.means, B, layer))
                 for layer in range(L)]
        edits += [(n, partial(keep, key=n)) for n in names]
        metric = logit_diff(self.model.run_with_hooks(self.ds.tokens, fwd_hooks=edits), self.ds)
        resid = {layer: got[hooks.name("resid_pre", layer)] for layer in range(L)}
        tables = PatchCaches({n: got[n] for n in names if "resid" not in n}, {}, metric, metric)
        return _Base(resid, tables, metric.float().cpu())

    def replay(self, rows: Tensor, layer0: int, P: Int[Tensor, " batch"], base: _Base) -> Float[Tensor, "config batch"]:
        """Configurations `rows` from layer `layer0` and per-prompt position P on (each matches
        the base before both)."""
        rp, cfg = self.rp, self.configs
        P = torch.minimum(P.to(self.end.device), self.end)
        pos = window(P, self.end, self.T)  # [batch win]
        S, B = len(rows), len(self.ds)
        X = gather_pos(base.resid[layer0], pos).expand(S, -1, -1, -1).clone()
        for layer in range(layer0, rp.n_layers):
            cos, sin = rp.cos_sin(base.tables, layer, pos)
            x = rp.ln1(layer, X)
            q = rp.rotate(rp.project(layer, x, "q", normed=True), cos, sin)
            k = rp.rotate(rp.project(layer, x, "k", normed=True), cos, sin)
            v = rp.project(layer, x, "v", normed=True)
            z = rp.attend(q, rp.clean_qkv(base.tables, layer, "k"), base.tables.clean[hooks.name("v", layer)], k, v, P)
            mask = cfg.ablated(layer, rows, pos)[..., None]
            z = torch.where(mask.to(z.device), gather_pos(self.means[layer], pos)[None].to(z.dtype), z)
            a = rp.attn(layer)
            X = X + einops.einsum(z, a.W_O, "s b win head e, head e d_model -> s b win d_model")
            X = X + (0 if a.b_O is None else a.b_O)
            X = X + rp.mlp(layer, X)
        at_end = (self.end - P)[None, :, None, None].expand(S, -1, 1, X.shape[-1])
        return rp.logit_diff(X.gather(2, at_end)[:, :, 0], self.io, self.s).float().cpu()


TOLERANCE = {torch.float32: 1e-3, torch.float64: 1e-6}  # the replay's self-check, relative; 3e-2 in 16-bit


@torch.no_grad()
def ablated_logit_diffs(
    model: Model,
    ds: IOIDataset,
    means: dict[int, Tensor],
    configs: Configs,
    bases: list[int] | None = None,
    max_rows: int = 512,
    progress: Progress | None = None,
) -> Float[Tensor, "config batch"]:
    """Per-prompt logit diff of every configuration. The `bases` (default: the first) run through
    the bridge; every other configuration is replayed from the first layer and the first
    position where it differs from the base it shares most layers with (module docstring)."""
    bases = list(dict.fromkeys([0] if bases is None else bases))
    C, B = len(configs), len(ds)
    try:
        rep = _Replayer(model, ds, means, configs)
    except WorkbenchError:  # a model the replay cannot run (parallel attention, soft-capping)
        return ablated_logit_diffs_reference(model, ds, means, configs)
    L, end = model.info.n_layers, ds.positions["END"]
    first = torch.stack([configs.first_difference(b) for b in bases]).clamp(max=L - 1)  # [base config]
    where = torch.stack([torch.minimum(configs.first_position(b, rep.T), end) for b in bases])  # [base config batch]
    # replay cost from each base: layers left x positions in the window; the cheapest base wins
    cost = (L - first) * (end - where + 1).float().mean(-1)
    which = cost.argmin(0)
    out = torch.empty(C, B)
    todo = [c for c in range(C) if c not in bases]
    done, checked = 0, False
    tol = TOLERANCE.get(model.dtype, 3e-2)
    for j, b in enumerate(bases):
        base = rep.base_run(b)
        out[b] = base.metric
        done += 1
        mine = [c for c in todo if int(which[c]) == j]
        if not mine:
            continue
        # configurations that start at the same layer and positions replay together: one that
        # starts earlier would drag a whole block back to its start
        groups: dict[tuple, list[int]] = {}
        for c in mine:
            groups.setdefault((int(first[j, c]), tuple(where[j, c].tolist())), []).append(c)
        if not checked:  # the self-check: the base itself, replayed from the earliest start, must match the bridge
            layer0, P = min(groups)
            again = rep.replay(torch.tensor([b]), layer0, torch.tensor(P), base)[0]
            if (again - base.metric).abs().max() > tol * max(1.0, float(base.metric.abs().max())):
                return ablated_logit_diffs_reference(model, ds, means, configs)
            checked = True
        per_pass = max(1, max_rows // B)
        for (layer0, P), members in sorted(groups.items()):
            for k in range(0, len(members), per_pass):
                rows = torch.tensor(members[k : k + per_pass])
                out[rows] = rep.replay(rows, layer0, torch.tensor(P), base)
                done += len(rows)
                if progress:
                    progress(done, C, "evaluating the circuit")
    return out


def ablated_logit_diff(
    model: Model,
    ds: IOIDataset,
    means: dict[int, Tensor],
    ablate: Bool[Tensor, "config layer head"],
    chunk: int = 8,
    progress: Progress | None = None,
) -> Float[Tensor, "config"]:
    """Mean logit diff for each configuration, mean-ablating the heads marked True in it at every
    position (the others kept everywhere)."""
    L, H = ablate.shape[1:]
    configs = Configs(~ablate.cpu(), torch.zeros_like(ablate.cpu()), torch.full((L, H, len(ds)), -1))
    return ablated_logit_diffs(model, ds, means, configs, progress=progress).mean(1)


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


def _configs(model: Model, ds: IOIDataset, classes: dict[str, list[Head]], checks: bool, n_random: int, seed: int):
    """(names, Configs): model, circuit (per position), circuit at every position, and the checks'."""
    circuit = sorted({h for hs in classes.values() for h in hs})
    positioned = head_mask(model, [h for c, hs in classes.items() if c in CLASS_POSITIONS for h in hs])
    C = head_mask(model, circuit)
    everywhere = torch.ones_like(C)
    none = torch.zeros_like(C)
    rows: list[tuple[str, Tensor, Tensor]] = [("model", everywhere, none), ("circuit", C & ~positioned, positioned),
                                              ("circuit, all positions", C, none)]  # fmt: skip
    subsets: list[tuple[str, list[Head]]] = []
    if checks:
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
    configs = Configs(torch.stack(keep_all), torch.stack(keep_at), head_positions(model, ds, classes))
    return index, configs, subsets


@torch.no_grad()
def evaluate(
    model: Model,
    ds: IOIDataset,
    classes: dict[str, list[Head]],
    checks: bool = True,
    n_random: int = 4,
    n_abc: int = N_ABC,
    seed: int = 0,
    min_minimality: float = MIN_MINIMALITY,
    n_boot: int = N_BOOT,
    progress: Progress | None = None,
) -> Evaluation:
    """Faithfulness (and, with checks=True, completeness and minimality) of a circuit on `ds`,
    each class kept at its positions (see the module docstring), with bootstrap intervals."""
    circuit = sorted({h for hs in classes.values() for h in hs})
    if not circuit:
        raise WorkbenchError(
            "the circuit is empty: nothing to evaluate (discovery found no heads; lower the thresholds)"
        )
    means = abc_means(model, ds, n_abc, progress=progress)
    index, configs, subsets = _configs(model, ds, classes, checks, n_random, seed)
    per_prompt = ablated_logit_diffs(model, ds, means, configs, bases=[index["model"], index["circuit"]],
                                     progress=progress)  # [config batch]
    idx = resample_indices(len(ds), n_boot, seed)
    boot = resampled_means(per_prompt, idx)  # [config boot]
    mean = per_prompt.double().mean(1)

    def F(name: str) -> tuple[Tensor, Tensor]:
        return mean[index[name]], boot[index[name]]

    def fig(value: Tensor, samples: Tensor) -> Interval:
        return interval(value, samples)

    (m, mb), (c, cb), (a, ab) = F("model"), F("circuit"), F("circuit, all positions")
    used = [ds.base_templates[b] for b in sorted({int(t) // 2 for t in ds.template_ids})] if ds.base_templates else []
    ev = Evaluation(fig(m, mb), fig(c, cb), fig(c / m, cb / mb), len(ds), fig(a, ab), fig(a / m, ab / mb), n_abc,
                    used, list(ds.names), min_minimality=min_minimality)  # fmt: skip
    if not checks:
        return ev
    gaps, gap_boot = [], []
    for name, K in subsets:
        (ck, ckb), (mk, mkb) = F(f"C-{name}"), F(f"M-{name}")
        g, gb = (ck - mk).abs(), (ckb - mkb).abs()
        gaps.append(g)
        gap_boot.append(gb)
        gi = fig(g, gb)
        ev.completeness.append({"removed": name, "n_removed": len(K), "circuit": float(ck), "model": float(mk),
                                "gap": gi.value, "gap_lo": gi.lo, "gap_hi": gi.hi})  # fmt: skip
    ev.incompleteness = fig(torch.stack(gaps).max() / m.abs(), torch.stack(gap_boot).max(0).values / mb.abs())
    for hs in classes.values():
        for v in hs:
            (kv, kvb), (k, kb), (only, onlyb) = F(f"C-K-v {v}"), F(f"C-K {v}"), F(f"C-v {v}")
            value = torch.maximum((kv - k).abs(), (only - c).abs()) / c.abs()
            samples = torch.maximum((kvb - kb).abs(), (onlyb - cb).abs()) / cb.abs()
            mi = fig(value, samples)
            ev.minimality[f"{v[0]}.{v[1]}"] = {**mi.to_dict(), "passes": mi.lo >= min_minimality}
    return ev
