"""Checks by intervention: switch a feature off (or scale it) at its position in the real model with
the transcoders spliced in, and set the measured change of a logit beside the graph's prediction.

The spliced model: every MLP's output is its transcoder's output on the MLP's live input plus the
clean run's error vector at that layer and position. Three modes, from the graph's own assumptions to
none of them:

    linear   attention patterns and norm scales frozen at the clean run's, and each transcoder's
             active set frozen too (a clean-active feature's activation = its pre-activation, the
             others 0): the model is then exactly the linear one the graph describes
    norms    patterns and norm scales frozen; the transcoders live (TopK / ReLU choose again)
    frozen   attention patterns frozen (circuit-tracer's freeze_attention); norms and transcoders live
    live     nothing frozen

The graph's prediction for scaling source feature s by c: its output changes by (c - 1) a_s W_dec[s];
each downstream feature's activation moves with its pre-activation, so with M[t, u] = A[t, u] / a_u
(a feature's effect per unit of activation; A's columns count a feature's whole output)

    d_pre = (c - 1) (I - M_FF)^-1 A[F, s]        d_logit = (c - 1) A[logit, s] + M[logit, F] d_pre

In `linear` mode this is exact; the other two show where the linear picture breaks.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from interp import hooks
from interp.errors import WorkbenchError
from interp.graphs.graph import Graph
from interp.graphs.reference import frozen_hooks, quiet
from interp.graphs.replacement import LocalReplacement

MODES = ("linear", "norms", "frozen", "live")


def predicted_effects(g: Graph, sources: list[int], logit: int = 0, scale: float = 0.0) -> Tensor:
    """The graph's predicted change of the centred logit node `logit` (its index among the logits)
    when each source feature's activation is multiplied by `scale`."""
    F = g.n_features
    A = g.adjacency.double()
    M = A[:, :F] / g.activations.double()[None]
    eye = torch.eye(F, dtype=torch.float64)
    cols = A[:F, sources]  # [F, source]
    d_pre = torch.linalg.solve(eye - M[:F], cols)
    row = g.logit_index(logit)
    out = A[row, sources] + M[row] @ d_pre
    return ((scale - 1.0) * out).float()


def sample_features(g: Graph, n: int, seed: int = 0) -> list[int]:
    """`n` feature nodes drawn across the graph: a round over the layers, uniformly within each."""
    rng = np.random.default_rng(seed)
    layers = g.features[:, 0].numpy()
    pools = {int(la): list(rng.permutation(np.nonzero(layers == la)[0])) for la in np.unique(layers)}
    out: list[int] = []
    while len(out) < min(n, g.n_features):
        for la in sorted(pools):
            if pools[la] and len(out) < n:
                out.append(int(pools[la].pop()))
    return sorted(out)


@torch.no_grad()
def measured_effects(model, R: LocalReplacement, g: Graph, sources: list[int], mode: str = "live", logit: int = 0,
                     scale: float = 0.0, batch: int = 16) -> Tensor:  # fmt: skip
    """The change of the centred logit `logit` at the last position when each source feature is scaled
    by `scale` in the spliced model (see the module docstring), against the same model unedited."""
    if mode not in MODES:
        raise WorkbenchError(f"unknown intervention mode {mode!r}; choose {', '.join(MODES)}")
    bad = [s for s in sources if not 0 <= s < g.n_features]
    if bad:
        raise WorkbenchError(f"node {bad[0]} is not a feature node of this graph (features are 0..{g.n_features - 1})")
    token = int(g.logit_tokens[logit])
    base = _spliced(model, R, [], mode)[0]
    out = []
    for start in range(0, len(sources), batch):
        chunk = sources[start : start + batch]
        edits = [(tuple(int(x) for x in g.features[s]), scale) for s in chunk]
        out.append(_spliced(model, R, edits, mode) - base)
    return torch.cat(out)[:, token]


def spliced_sets(model, R: LocalReplacement, edits: list[list[tuple[tuple[int, int, int], float]]], mode: str) -> Tensor:
    """Centred last-position logits [row vocab] of the spliced model, one batch row per set of edits
    ((layer, position, feature), scale) applied together (an empty set: the model unedited)."""
    B = len(edits)
    fwd = frozen_hooks(R, B) if mode in ("linear", "norms") else []
    if mode == "frozen":
        fwd = [h for h in frozen_hooks(R, B) if h[0].endswith("hook_pattern")]
    seen: dict[int, Tensor] = {}
    for layer in range(R.n_layers):
        one = R.transcoders.layer_view(layer)
        mask = (R.acts[layer] != 0).float()
        here = [(b, pos, f, c) for b, row in enumerate(edits) for (la, pos, f), c in row if la == layer]

        def keep(x, hook, layer=layer):
            seen[layer] = x

        def replace(x, hook, layer=layer, one=one, mask=mask, here=here):
            x2 = seen[layer].to(one.W_enc.dtype)
            pre = one.pre_acts(x2.reshape(1, -1, x2.shape[-1]))[0].reshape(B, R.n_pos, -1)
            acts = pre * mask.to(pre.device) if mode == "linear" else one.activate(pre[None])[0]
            for b, pos, f, c in here:
                acts[b, pos, f] = acts[b, pos, f] * c
            out = one.decode(acts.reshape(1, -1, acts.shape[-1]), x2.reshape(1, -1, x2.shape[-1]))[0]
            return (out.reshape(B, R.n_pos, -1) + R.errors[layer].to(out.device)).to(x.dtype)

        fwd += [(hooks.name("mlp_normed", layer), keep), (hooks.name("mlp_out", layer), replace)]
    with quiet():
        logits = model.run_with_hooks(R.tokens[None].expand(B, -1).to(model.device), fwd_hooks=fwd)[:, -1].float()
    return logits - logits.mean(-1, keepdim=True)


def _spliced(model, R: LocalReplacement, edits: list[tuple[tuple[int, int, int], float]], mode: str) -> Tensor:
    """`spliced_sets` with one edit a row (one row, unedited, for no edits)."""
    return spliced_sets(model, R, [[e] for e in edits] or [[]], mode)


def check(model, R: LocalReplacement, g: Graph, n: int = 32, modes=MODES, logit: int = 0, scale: float = 0.0,
          seed: int = 0) -> dict:  # fmt: skip
    """Predicted beside measured effects for `n` sampled features in each mode, with the Pearson
    correlation and the largest absolute gap per mode."""
    sources = sample_features(g, n, seed)
    predicted = predicted_effects(g, sources, logit, scale)
    report = {"nodes": [g.describe(s)["id"] for s in sources], "predicted": predicted.tolist(), "logit": logit,
              "scale": scale, "modes": {}}  # fmt: skip
    for mode in modes:
        measured = measured_effects(model, R, g, sources, mode, logit, scale)
        report["modes"][mode] = {"measured": measured.tolist(), "pearson": correlation(predicted, measured),
                                 "max_gap": float((predicted - measured).abs().max()) if sources else 0.0}  # fmt: skip
    return report


def correlation(a: Tensor, b: Tensor) -> float | None:
    """Pearson's correlation of two series, None (JSON null) where it is undefined: fewer than 2 pairs or a constant side."""
    if len(a) < 2 or float(a.std()) == 0 or float(b.std()) == 0:
        return None
    return float(torch.corrcoef(torch.stack([a.double(), b.double()]))[0, 1])
