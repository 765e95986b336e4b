"""Supernodes proposed automatically, and the faithfulness of a grouping measured by intervention.

Which features. The feature nodes the pruned graph keeps (all feature nodes without a pruning), at
most `max_features` of them, the most influential first. Features of any layer may share a supernode
(a concept often spans several layers and positions); `layer_band` limits a supernode's layer span
when given (0: one layer each).

Similarity of two feature nodes u, v: a weighted mean (weights default 1/3 each) of three cosines

    decoder      cos(W_dec[u], W_dec[v])       what they write (layers share the residual stream)
    co-activation cos(act_u, act_v)           their activation profiles: over the graph's own
                                              positions (the transcoder's activation of u's latent
                                              at every position, BOS's left out when the graph leaves
                                              it out), or over the tokens of a small text sample
                                              (`text_profiles`) when given
    edges        cos([A_in u, A_out u], [A_in v, A_out v])   their rows (inputs) and columns (outputs)
                                              of the pruned adjacency, concatenated: who drives
                                              them and what they drive, with sign

Clustering: agglomerative with average linkage, deterministic (no random state: the most similar
allowed pair merges, ties to the pair of lowest node indices), merging while the best average
similarity is >= `threshold` (in (0, 1]; default 0.5). Clusters of one feature are no supernode.
`agglomerate` is the Lance-Williams form; `agglomerate_reference` recomputes every average from the
pairwise matrix (the slow, obvious one).

Names: the layer span, the token the members' summed writes (sum of a_u W_dec[u]) promote most through
the final norm and the unembedding, and the member count: "L0-1 ' mat' (3)", made unique with "#2".

Faithfulness (`faithfulness`): every supernode's feature members are switched off together at
their positions in the real model with the transcoders spliced in (interp.graphs.intervene's spliced
model and modes: `frozen` = attention patterns frozen, `linear` = everything the graph freezes), and
the change of the target logit is set beside

    predicted_sum    the sum of the members' single-feature predictions (intervene.predicted_effects),
                     the graph's additive picture of the group
    predicted_joint  the graph's exact linear prediction for the members switched off together: a
                     member's effect through another member is not counted twice (equal to the sum
                     when no member feeds another, e.g. all in one layer)

and beside the same for every member alone (predicted vs measured, as intervene.check reports). Per
mode: Pearson correlation over supernodes (predicted_sum vs measured), over single features, and the
interaction gap (measured together minus the sum of the members measured alone): members that do
not act together show up there and as a gap between predicted_sum and measured.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from interp import hooks
from interp.errors import WorkbenchError
from interp.graphs.graph import Graph
from interp.graphs.intervene import MODES, correlation, predicted_effects, spliced_sets
from interp.graphs.replacement import LocalReplacement

THRESHOLD = 0.5  # average combined similarity at which clusters still merge
WEIGHTS = (1 / 3, 1 / 3, 1 / 3)  # decoder, co-activation, edges
MAX_FEATURES = 256


def check_threshold(threshold: float, where: str = "the supernode threshold") -> float:
    if not isinstance(threshold, (int, float)) or not 0 < float(threshold) <= 1:
        raise WorkbenchError(f"{where} must be in (0, 1], got {threshold}")
    return float(threshold)


# -- the three signals --------------------------------------------------------------------------------
def cosine_matrix(X: Tensor) -> Tensor:
    """Pairwise cosine of the rows of X (float64; a zero row has cosine 0 with everything, 1 with itself)."""
    X = X.double()
    n = X.norm(dim=1, keepdim=True)
    U = torch.where(n > 0, X / n.clamp(min=1e-30), torch.zeros_like(X))
    S = U @ U.T
    S.fill_diagonal_(1.0)
    return S.clamp(-1.0, 1.0)


def decoder_rows(g: Graph, transcoders, nodes: Sequence[int]) -> Tensor:
    """W_dec rows [n d_model] of feature nodes `nodes` (transcoders in any layer order)."""
    f = g.features[list(nodes)]
    return (
        torch.stack([transcoders.W_dec[transcoders.index(int(la))][int(i)] for la, _, i in f.tolist()]).detach().float()
    )


def graph_profiles(g: Graph, R: LocalReplacement, nodes: Sequence[int]) -> Tensor:
    """Each node's latent's activation at every position of the prompt [n pos] (BOS's position out
    when the graph leaves BOS out)."""
    f = g.features[list(nodes)]
    prof = R.acts[f[:, 0], :, f[:, 2]].float()  # [n pos]
    return prof[:, 1:] if g.settings.get("zero_bos") and prof.shape[1] > 1 else prof


@torch.no_grad()
def text_profiles(model, transcoders, g: Graph, nodes: Sequence[int], texts: Sequence[str]) -> Tensor:
    """Each node's latent's activation over every token (BOS left out) of `texts` [n tokens]."""
    if not texts:
        raise WorkbenchError("the co-activation text sample is empty; give at least one text")
    f = g.features[list(nodes)]
    layers = sorted({int(x) for x in f[:, 0]})
    cols = []
    for text in texts:
        tokens = model.to_tokens(text)[0]
        got: dict[int, Tensor] = {}

        def keeper(layer, got=got):
            def keep(x, hook=None):
                got[layer] = x.detach()[0].float()

            return keep

        model.run_with_hooks(tokens[None], fwd_hooks=[(hooks.name("mlp_normed", la), keeper(la)) for la in layers])
        start = 1 if model.bos_token_id is not None and int(tokens[0]) == int(model.bos_token_id) else 0
        acts = {la: transcoders.encode(got[la][start:], la).float().cpu() for la in layers}
        cols.append(torch.stack([acts[int(la)][:, int(i)] for la, _, i in f.tolist()]))
    return torch.cat(cols, 1)


def edge_profiles(A: Tensor, nodes: Sequence[int], edges: Tensor | None = None) -> Tensor:
    """[row, column] of each node in the (pruned) adjacency: its inputs then its outputs [n 2N]."""
    A = A.float() if edges is None else A.float() * edges.float()
    idx = list(nodes)
    return torch.cat([A[idx], A[:, idx].T], 1)


def combine(decoder: Tensor, coactivation: Tensor, edges: Tensor, weights: Sequence[float] = WEIGHTS) -> Tensor:
    """The weighted mean of the three similarity matrices (weights >= 0, not all 0)."""
    w = [float(x) for x in weights]
    if len(w) != 3 or min(w) < 0 or sum(w) <= 0:
        raise WorkbenchError(f"the similarity weights must be three numbers >= 0, not all 0, got {list(weights)}")
    return (w[0] * decoder.double() + w[1] * coactivation.double() + w[2] * edges.double()) / sum(w)


# -- clustering ---------------------------------------------------------------------------------------
def _allowed(lo: np.ndarray, hi: np.ndarray, band: int | None) -> np.ndarray:
    if band is None:
        return np.ones((len(lo), len(lo)), dtype=bool)
    return np.maximum(hi[:, None], hi[None]) - np.minimum(lo[:, None], lo[None]) <= band


def agglomerate(S: Tensor, threshold: float = THRESHOLD, layers: Sequence[int] | None = None,
                layer_band: int | None = None) -> list[list[int]]:  # fmt: skip
    """Average-linkage clusters of the items of the similarity matrix S [n n] (see the module
    docstring), each a sorted list of indices, clusters ordered by their first index; singletons
    included. `layers`/`layer_band`: a cluster's layers span at most `layer_band`."""
    threshold = check_threshold(threshold)
    n = S.shape[0]
    if n == 0:
        return []
    if layer_band is not None and layers is None:
        raise WorkbenchError("a layer band needs the items' layers")
    M = S.double().numpy().copy()
    size = np.ones(n)
    alive = np.ones(n, dtype=bool)
    lay = np.zeros(n, dtype=np.int64) if layers is None else np.asarray(layers, dtype=np.int64)
    lo, hi = lay.copy(), lay.copy()
    members = {i: [i] for i in range(n)}
    upper = np.triu(np.ones((n, n), dtype=bool), 1)
    while True:
        ok = upper & alive[:, None] & alive[None] & _allowed(lo, hi, layer_band)
        cand = np.where(ok, M, -np.inf)
        k = int(np.argmax(cand))  # row-major: ties go to the lowest (i, j)
        i, j = divmod(k, n)
        if not np.isfinite(cand[i, j]) or cand[i, j] < threshold:
            break
        row = (size[i] * M[i] + size[j] * M[j]) / (size[i] + size[j])  # Lance-Williams, average linkage
        M[i], M[:, i] = row, row
        M[i, i] = 1.0
        size[i] += size[j]
        alive[j] = False
        lo[i], hi[i] = min(lo[i], lo[j]), max(hi[i], hi[j])
        members[i] += members.pop(j)
    return [sorted(members[i]) for i in sorted(members)]


def agglomerate_reference(S: Tensor, threshold: float = THRESHOLD, layers: Sequence[int] | None = None,
                          layer_band: int | None = None) -> list[list[int]]:  # fmt: skip
    """The same clustering, every cluster-to-cluster similarity recomputed as the mean of its pairs."""
    threshold = check_threshold(threshold)
    P = S.double().tolist()
    lay = [0] * len(P) if layers is None else [int(x) for x in layers]
    clusters = [[i] for i in range(len(P))]
    while True:
        best = None
        for a in range(len(clusters)):
            for b in range(a + 1, len(clusters)):
                both = [lay[x] for x in clusters[a] + clusters[b]]
                if layer_band is not None and max(both) - min(both) > layer_band:
                    continue
                s = sum(P[x][y] for x in clusters[a] for y in clusters[b]) / (len(clusters[a]) * len(clusters[b]))
                if best is None or s > best[0]:
                    best = (s, a, b)
        if best is None or best[0] < threshold:
            return [sorted(c) for c in sorted(clusters, key=min)]
        _, a, b = best
        clusters[a] = clusters[a] + clusters.pop(b)


# -- the proposal -------------------------------------------------------------------------------------
def candidates(g: Graph, kept: Tensor | None = None, influence: Tensor | None = None,
               max_features: int = MAX_FEATURES) -> list[int]:  # fmt: skip
    """The feature nodes to group: kept ones (all without `kept`), at most `max_features`, the most
    influential first when `influence` is given; returned in node order."""
    nodes = list(range(g.n_features)) if kept is None else [int(i) for i in kept[: g.n_features].nonzero()[:, 0]]
    if influence is not None and len(nodes) > max_features:
        order = sorted(nodes, key=lambda i: (-float(influence[i]), i))
        nodes = order[:max_features]
    return sorted(nodes[:max_features])


def group_name(g: Graph, members: Sequence[int], token: str | None, taken: set[str]) -> str:
    layers = [int(g.features[m, 0]) for m in members]
    lo, hi = min(layers), max(layers)
    span = f"L{lo}" if lo == hi else f"L{lo}-{hi}"
    base = f"{span} {token!r} ({len(members)})" if token is not None else f"{span} group ({len(members)})"
    name, k = base, 2
    while name in taken:
        name, k = f"{base} #{k}", k + 1
    taken.add(name)
    return name


def propose(g: Graph, R: LocalReplacement, pruned=None, threshold: float = THRESHOLD,
            weights: Sequence[float] = WEIGHTS, layer_band: int | None = None, profiles: Tensor | None = None,
            max_features: int = MAX_FEATURES, top_token: Callable[[Tensor], str] | None = None) -> dict:  # fmt: skip
    """Supernodes for `g` (see the module docstring): {"supernodes": {name: [node ids]}, "threshold",
    "weights", "layer_band", "features": the ids grouped over, "similarity": {kind: [n n] matrix as
    lists}}. `profiles` [n_candidates, samples]: co-activation profiles (default: `graph_profiles`);
    `top_token(direction) -> str`: a name's token (default: none)."""
    threshold = check_threshold(threshold)
    if layer_band is not None and layer_band < 0:
        raise WorkbenchError(f"the layer band must be >= 0, got {layer_band}")
    kept = None if pruned is None else pruned.nodes
    nodes = candidates(g, kept, None if pruned is None else pruned.influence, max_features)
    A = g.adjacency if pruned is None else g.adjacency * pruned.edges
    prof = graph_profiles(g, R, nodes) if profiles is None else profiles
    if prof.shape[0] != len(nodes):
        raise WorkbenchError(f"co-activation profiles for {prof.shape[0]} features, but {len(nodes)} are grouped")
    sims = {"decoder": cosine_matrix(decoder_rows(g, R.transcoders, nodes)) if nodes else torch.zeros(0, 0),
            "coactivation": cosine_matrix(prof) if nodes else torch.zeros(0, 0),
            "edges": cosine_matrix(edge_profiles(A, nodes)) if nodes else torch.zeros(0, 0)}  # fmt: skip
    S = combine(sims["decoder"], sims["coactivation"], sims["edges"], weights)
    layers = [int(g.features[i, 0]) for i in nodes]
    clusters = [c for c in agglomerate(S, threshold, layers, layer_band) if len(c) > 1]
    groups: dict[str, list[str]] = {}
    taken: set[str] = set()
    for c in clusters:
        members = [nodes[i] for i in c]
        token = None
        if top_token is not None:
            rows = decoder_rows(g, R.transcoders, members) * g.activations[members, None].float()
            token = top_token(rows.sum(0))
        groups[group_name(g, members, token, taken)] = [g.describe(m)["id"] for m in members]
    return {"supernodes": groups, "threshold": threshold, "weights": [float(w) for w in weights],
            "layer_band": layer_band, "features": [g.describe(i)["id"] for i in nodes],
            "similarity": {k: v.tolist() for k, v in {**sims, "combined": S}.items()}}  # fmt: skip


def model_top_token(model) -> Callable[[Tensor], str]:
    """The token a residual direction promotes most through the final norm and the unembedding."""
    from interp.lens import direction_logits

    def top(direction: Tensor) -> str:
        return model.tokenizer.decode([int(direction_logits(model, direction[None].detach())[0].argmax())])

    return top


# -- faithfulness ---------------------------------------------------------------------------------------
def joint_predicted(g: Graph, groups: Sequence[Sequence[int]], logit: int = 0, scale: float = 0.0) -> Tensor:
    """The graph's exact linear prediction of the centred logit's change when every feature of a group
    is scaled by `scale` together, one value per group. With M[t, u] = A[t, u] / a_u, D = 1 off the
    group and `scale` on it, and d the pre-activation changes: (I - M_FF D) d = (c - 1) A[F, S] 1 and
    d_logit = (c - 1) A[logit, S] 1 + M[logit, F] D d."""
    F = g.n_features
    A = g.adjacency.double()
    M = A[:, :F] / g.activations.double()[None]
    row = g.logit_index(logit)
    out = []
    for S in groups:
        D = torch.ones(F, dtype=torch.float64)
        D[list(S)] = scale
        drive = (scale - 1.0) * A[:F, list(S)].sum(1)
        d = torch.linalg.solve(torch.eye(F, dtype=torch.float64) - M[:F] * D[None], drive)
        out.append((scale - 1.0) * A[row, list(S)].sum() + M[row] @ (D * d))
    return torch.stack(out).float() if out else torch.zeros(0)


def sum_predicted(g: Graph, groups: Sequence[Sequence[int]], logit: int = 0, scale: float = 0.0) -> Tensor:
    """The sum of each group's members' single-feature predictions."""
    flat = sorted({m for S in groups for m in S})
    if not flat:
        return torch.zeros(len(groups))
    single = dict(zip(flat, predicted_effects(g, flat, logit, scale).tolist()))
    return torch.tensor([sum(single[m] for m in S) for S in groups])


@torch.no_grad()
def measured_group_effects(model, R: LocalReplacement, g: Graph, groups: Sequence[Sequence[int]], mode: str = "frozen",
                           logit: int = 0, scale: float = 0.0, batch: int = 16) -> Tensor:  # fmt: skip
    """The change of the centred logit `logit` when every feature of a group is scaled by `scale` at
    once in the spliced model of interp.graphs.intervene (same modes), one value per group."""
    if mode not in MODES:
        raise WorkbenchError(f"unknown intervention mode {mode!r}; choose {', '.join(MODES)}")
    for S in groups:
        bad = [s for s in S if not 0 <= s < g.n_features]
        if bad or not S:
            raise WorkbenchError(
                f"a supernode to switch off must hold feature nodes (0..{g.n_features - 1}); got {list(S)}"
            )
    token = int(g.logit_tokens[logit])
    base = spliced_sets(model, R, [[]], mode)[0]
    out = [torch.zeros(0)]
    for start in range(0, len(groups), batch):
        chunk = groups[start : start + batch]
        edits = [[(tuple(int(x) for x in g.features[s]), scale) for s in S] for S in chunk]
        out.append((spliced_sets(model, R, edits, mode) - base)[:, token].cpu())
    return torch.cat(out)


def faithfulness(model, R: LocalReplacement, g: Graph, supernodes: dict[str, list[str]],
                 modes: Sequence[str] = ("linear", "frozen"), logit: int = 0, scale: float = 0.0) -> dict:  # fmt: skip
    """Each supernode's members switched off together beside the graph's predictions, and every member
    alone beside its prediction (see the module docstring). Error nodes in a supernode are left out
    (only features are switched); a supernode without features is skipped."""
    ids = {g.describe(i)["id"]: i for i in range(g.n_features)}
    names = [n for n, ms in supernodes.items() if any(m in ids for m in ms)]
    groups = [[ids[m] for m in supernodes[n] if m in ids] for n in names]
    flat = sorted({m for S in groups for m in S})
    p_sum, p_joint = sum_predicted(g, groups, logit, scale), joint_predicted(g, groups, logit, scale)
    p_single = predicted_effects(g, flat, logit, scale) if flat else torch.zeros(0)
    report = {"logit": logit, "logit_token": g.logit_strs[logit], "scale": scale, "modes": {},
              "supernodes": [{"name": n, "members": [g.describe(m)["id"] for m in S], "predicted_sum": float(a),
                              "predicted_joint": float(b), "measured": {}, "measured_singles_sum": {}}
                             for n, S, a, b in zip(names, groups, p_sum.tolist(), p_joint.tolist())],
              "features": {"nodes": [g.describe(m)["id"] for m in flat], "predicted": p_single.tolist(), "measured": {}}}  # fmt: skip
    for mode in modes:
        together = measured_group_effects(model, R, g, groups, mode, logit, scale) if groups else torch.zeros(0)
        single = (
            measured_group_effects(model, R, g, [[m] for m in flat], mode, logit, scale) if flat else torch.zeros(0)
        )
        by = dict(zip(flat, single.tolist()))
        alone_sum = torch.tensor([sum(by[m] for m in S) for S in groups])
        for r, t, s in zip(report["supernodes"], together.tolist(), alone_sum.tolist()):
            r["measured"][mode], r["measured_singles_sum"][mode] = t, s
        report["features"]["measured"][mode] = single.tolist()
        gap = lambda a, b: float((a - b).abs().max()) if len(a) else 0.0
        report["modes"][mode] = {
            "pearson_supernodes": correlation(p_sum, together), "pearson_supernodes_joint": correlation(p_joint, together),
            "pearson_features": correlation(p_single, single), "max_gap_supernodes": gap(p_sum, together),
            "max_gap_supernodes_joint": gap(p_joint, together), "max_gap_features": gap(p_single, single),
            "max_interaction": gap(together, alone_sum)}  # fmt: skip
    return report


def table(report: dict) -> str:
    """The faithfulness report as text: one line a supernode, then the correlations per mode."""
    modes = list(report["modes"])
    head = f"{'supernode':32} {'n':>3} {'pred sum':>9} {'pred joint':>10} " + " ".join(
        f"{'meas ' + m:>12}" for m in modes
    )
    lines = [f"switching off each supernode (logit {report['logit_token']!r}):", head]
    for r in report["supernodes"]:
        meas = " ".join(f"{r['measured'][m]:>12.4g}" for m in modes)
        lines.append(
            f"{r['name'][:32]:32} {len(r['members']):>3} {r['predicted_sum']:>9.4g} {r['predicted_joint']:>10.4g} {meas}"
        )
    fmt = lambda x: "n/a" if x is None else f"{x:.3f}"
    for m, s in report["modes"].items():
        lines.append(f"mode {m}: correlation over supernodes {fmt(s['pearson_supernodes'])} (joint prediction "
                     f"{fmt(s['pearson_supernodes_joint'])}), over their {len(report['features']['nodes'])} features "
                     f"alone {fmt(s['pearson_features'])}; largest gap {s['max_gap_supernodes']:.3g} (features "
                     f"{s['max_gap_features']:.3g}), largest interaction {s['max_interaction']:.3g}")  # fmt: skip
    return "\n".join(lines)
