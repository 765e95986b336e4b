"""The slow, obviously correct adjacency: perturb the real model once per source.

The real model runs with its attention patterns and norm scales replaced by the values of the clean
run (hooks on `hook_pattern` and `hook_scale`), each MLP's output replaced by its clean value plus
the change of the transcoder's skip term (the only part of an MLP the direct effect passes through),
and one source's output added where it writes: a token's embedding at `hook_embed`, a feature's or an
error's vector at its layer's `hook_mlp_out`. The model is then affine in the perturbation, so the
change of every target (a feature's pre-activation read at `mlp.hook_in`, a centred logit) is the
source's column of the adjacency, exactly. Nothing of interp.graphs.replacement is used but the
clean values it recorded; sources are run `batch` at a time on the batch axis.
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager

import torch
from torch import Tensor

from interp import hooks
from interp.graphs.graph import Graph
from interp.graphs.replacement import LocalReplacement


@contextmanager
def quiet():
    """TransformerLens warns that a hooked norm scale rebuilds the norm's output from the hooked
    values; that is what freezing it means here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="A forward hook edited hook_scale")
        yield


def frozen_hooks(R: LocalReplacement, batch: int) -> list:
    """Hooks that set every attention pattern and norm scale to the clean run's."""
    out = []
    for layer in range(R.n_layers):
        pat = R.patterns[layer][None].expand(batch, -1, -1, -1)
        out.append((hooks.name("pattern", layer), lambda x, hook, p=pat: p.to(x.dtype)))
        for i, ln in enumerate(("ln1", "ln2")):
            s = R.scales[i, layer][None, :, None].expand(batch, -1, -1)
            out.append((hooks.name(f"{ln}_scale", layer), lambda x, hook, s=s: s.to(x.dtype)))
    s = R.final_scale[None, :, None].expand(batch, -1, -1)
    out.append((hooks.name("final_scale"), lambda x, hook, s=s: s.to(x.dtype)))
    return out


@torch.no_grad()
def reference_adjacency(model, R: LocalReplacement, g: Graph, errors: Tensor, batch: int = 32) -> Tensor:
    """g's adjacency rebuilt one source at a time (see the module docstring); `errors` are the error
    vectors the graph's error nodes write (BOS's zeroed when the graph left BOS out)."""
    L, P = R.n_layers, R.n_pos
    tc = R.transcoders
    W_skip = None if tc.W_skip is None else tc.W_skip.float()
    fl, fp, ff = g.features.T
    sources = list(range(g.n_features)) + list(range(g.error_start, g.logit_start))
    A = torch.zeros(g.n_nodes, g.n_nodes)
    logit_ids = g.logit_tokens.to(model.device)
    for start in range(0, len(sources), batch):
        chunk = sources[start : start + batch]
        B = len(chunk)
        embed_add = torch.zeros(B, P, R.inputs.shape[-1])
        mlp_add = torch.zeros(L, B, P, R.inputs.shape[-1])
        for b, s in enumerate(chunk):
            kind = g.kind(s)
            if kind == "feature":
                mlp_add[fl[s], b, fp[s]] = tc.W_dec[fl[s], ff[s]].float() * g.activations[s]
            elif kind == "error":
                layer, pos = divmod(s - g.error_start, P)
                mlp_add[layer, b, pos] = errors[layer, pos]
            else:
                embed_add[b, s - g.token_start] = R.inputs[s - g.token_start]
        seen: dict[int, Tensor] = {}
        hk = frozen_hooks(R, B)
        hk.append((hooks.name("embed"), lambda x, hook, e=embed_add: x + e.to(x.dtype)))
        for layer in range(L):

            def keep(x, hook, layer=layer, seen=seen):
                seen[layer] = x.float()

            def replace(x, hook, layer=layer, seen=seen, add=mlp_add):
                out = R.mlp_out[layer][None] + add[layer]
                if W_skip is not None:
                    out = out + (seen[layer] - R.mlp_in[layer]) @ W_skip[layer].T
                return out.to(x.dtype)

            hk += [(hooks.name("mlp_normed", layer), keep), (hooks.name("mlp_out", layer), replace)]
        with quiet():
            logits = model.run_with_hooks(R.tokens[None].expand(B, -1), fwd_hooks=hk)[:, -1].float()
        centred = logits - logits.mean(-1, keepdim=True)
        base = R.logits[-1] - R.logits[-1].mean()
        x2 = torch.stack([seen[layer] for layer in range(L)])  # [layer batch pos d]
        diff = x2[fl, :, fp] - R.mlp_in[fl, fp][:, None]  # [feature batch d]
        dpre = torch.einsum("sbd,sd->bs", diff, tc.W_enc.float()[fl, :, ff])
        cols = torch.tensor(chunk)
        A[: g.n_features, cols] = dpre.T.cpu()
        A[g.logit_start :, cols] = (centred[:, logit_ids] - base[logit_ids]).T.cpu()
    return A
