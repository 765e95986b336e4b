"""Path patching (Wang et al. 2022, appendix B), fast and batched over sender heads.

Step 1: run the clean prompts with every attention head frozen at its clean output except the
sender, which takes its output from the corrupted (ABC) run; MLPs and norms are recomputed.
Step 2 (receivers only): run the clean prompts again with the receiver heads' query/key/value
inputs taken from step 1 at the chosen positions; everything else is recomputed. The result is
the logit difference at END.

Why this is fast. With every head frozen, nothing moves between positions in step 1, so a
sender's effect at a position only flows through the MLPs at that same position: step 1 is an
MLP-only pass at the few positions that matter (END for the logits, the receiver position
otherwise), batched over all senders. In step 2 only positions from the patched one up to END
can change, so the rest of the model runs on that window against the clean keys and values.

GQA. A receiver is a *query* head. Its key/value input is patched for that head alone: its
own k/v are recomputed from the patched residual stream, while the other query heads sharing
the same KV head keep the clean k/v (`hook_k`/`hook_v` are per KV head, so the reference
implementation computes the receiver's output in a separate run and patches its `hook_z`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from interp.circuits.metrics import logit_diff
from interp.circuits.replay import Replay, gather_pos, window
from interp.data.ioi import IOIDataset, positions_at
from interp.errors import WorkbenchError

Head = tuple[int, int]
Progress = Callable[[int, int, str], None]


@dataclass
class Receivers:
    """Where senders' paths end, when not at the logits."""

    heads: list[Head]  # receiver (layer, query head) pairs
    components: str = "q"  # which inputs to patch: any of "q", "k", "v" (e.g. "kv")
    position: str | None = "END"  # IOI position whose inputs are patched; None patches every position

    def __post_init__(self):
        if not self.heads:
            raise WorkbenchError("path patching needs at least one receiver head")
        if not self.components or set(self.components) - set("qkv"):
            raise WorkbenchError(f"receiver components {self.components!r}: use letters from 'qkv'")


@dataclass
class PathResult:
    """Per-sender, per-prompt logit differences after patching each sender's path."""

    senders: list[Head]  # the sender heads, in the order of `patched`
    patched: Float[Tensor, "sender batch"]  # logit diff with that sender's path patched
    clean: Float[Tensor, "batch"]  # clean logit diff
    corrupted: Float[Tensor, "batch"]  # corrupted (ABC) logit diff

    def normalized(self) -> Float[Tensor, "sender"]:
        """(patched - clean) / (clean - corrupted) of the mean logit diffs: 0 = no effect, -1 = all of it."""
        c, r = self.clean.mean(), self.corrupted.mean()
        return (self.patched.mean(1) - c) / (c - r)

    def grid(self, n_layers: int, n_heads: int) -> Float[Tensor, "layer head"]:
        """`normalized()` laid out as [layer, head] (NaN for heads that were not senders)."""
        out = torch.full((n_layers, n_heads), float("nan"))
        for (layer, head), v in zip(self.senders, self.normalized().tolist()):
            out[layer, head] = v
        return out


def all_heads(model) -> list[Head]:
    return [(layer, h) for layer in range(model.info.n_layers) for h in range(model.info.n_heads)]


@torch.no_grad()
def caches(model, ds: IOIDataset, names: list[str]):
    """Clean cache (the given hooks) and corrupted cache (hook_z only), plus both logit diffs."""
    wanted = set(names)
    clean_logits, clean = model.run_with_cache(ds.tokens, names_filter=lambda n: n in wanted)
    z_names = {f"blocks.{layer}.attn.hook_z" for layer in range(model.info.n_layers)}
    corr_logits, corr = model.run_with_cache(ds.corrupted_tokens, names_filter=lambda n: n in z_names)
    return clean, corr, logit_diff(clean_logits, ds), logit_diff(corr_logits, ds)


@torch.no_grad()
def path_patch(
    model,
    ds: IOIDataset,
    senders: list[Head] | None = None,
    receivers: Receivers | None = None,
    chunk: int = 64,
    progress: Progress | None = None,
    _caches=None,
) -> PathResult:
    """Path-patch every sender (default: every head) to the logits, or to `receivers`."""
    rp = Replay.of(model)
    senders = list(senders) if senders is not None else all_heads(model)
    _check_heads(model, senders, "sender")
    if receivers is not None:
        _check_heads(model, receivers.heads, "receiver")
    names = [n for layer in range(rp.n_layers) for n in rp.cache_names(layer)] + [
        f"blocks.{rp.n_layers - 1}.hook_resid_post"
    ]
    clean, corr, clean_ld, corr_ld = _caches or caches(model, ds, names)
    dev = ds.tokens.device
    io, s, end = ds.io_ids.to(dev), ds.s_ids.to(dev), ds.positions["END"].to(dev)
    B, T = ds.tokens.shape
    if receivers is None:
        P, targets = end[:, None], [rp.n_layers]
    else:
        pos = positions_at(ds, receivers.position)
        P = torch.arange(T, device=dev).expand(B, T) if pos is None else pos.to(dev)[:, None]
        targets = sorted({layer for layer, _ in receivers.heads})
        _check_null(rp, clean, clean_ld, receivers, P, ds)
    order = sorted(range(len(senders)), key=lambda i: senders[i][0])
    out = clean_ld.new_empty(len(senders), B)
    last = max(targets)
    for start in range(0, len(order), chunk):
        idx = order[start : start + chunk]
        group = [senders[i] for i in idx]
        live = [j for j, (layer, _) in enumerate(group) if layer < last]
        res = clean_ld.expand(len(group), B).clone()
        if live:
            sub = [group[j] for j in live]
            resid = _frozen_pass(rp, clean, corr, sub, P, targets)
            if receivers is None:
                res[live] = rp.logit_diff(resid[rp.n_layers][:, :, 0], io, s)
            else:
                res[live] = _receiver_pass(rp, clean, receivers, P, resid, ds)
        out[torch.tensor(idx)] = res
        if progress:
            progress(min(start + chunk, len(order)), len(order), "path patching")
    return PathResult(senders, out.cpu(), clean_ld.cpu(), corr_ld.cpu())


def _frozen_pass(rp: Replay, clean, corr, senders: list[Head], P, targets: list[int]) -> dict[int, Tensor]:
    """Step 1. Residual stream entering each target layer (n_layers = final), at positions P,
    for each sender (sorted by layer) with all heads frozen at clean but the sender."""
    S, d = len(senders), clean["blocks.0.hook_resid_pre"].shape[-1]
    dev = P.device
    layers = torch.tensor([layer for layer, _ in senders], device=dev)
    D = clean["blocks.0.hook_resid_pre"].new_zeros(S, *P.shape, d)
    out = {}
    for layer in range(int(layers.min()), max(targets) + 1):
        if layer in targets:
            base = (
                clean[f"blocks.{layer}.hook_resid_pre"]
                if layer < rp.n_layers
                else clean[f"blocks.{layer - 1}.hook_resid_post"]
            )
            out[layer] = gather_pos(base, P) + D
        if layer == rp.n_layers:
            break
        rows = (layers == layer).nonzero().flatten()
        if len(rows):
            heads = torch.tensor([senders[r][1] for r in rows.tolist()], device=dev)
            dz = corr[f"blocks.{layer}.attn.hook_z"] - clean[f"blocks.{layer}.attn.hook_z"]  # [batch pos head e]
            dz = gather_pos(dz, P)[:, :, heads].permute(2, 0, 1, 3)  # [n batch p e]
            D[rows] += rp.head_out(layer, heads, dz)
        act = int((layers <= layer).sum())  # senders are sorted: a prefix is active
        mid = gather_pos(clean[f"blocks.{layer}.hook_resid_mid"], P)
        D[:act] += rp.mlp(layer, mid + D[:act]) - gather_pos(clean[f"blocks.{layer}.hook_mlp_out"], P)
    return out


def _rot(rp: Replay, clean, layer: int, which: str) -> Tensor:
    """Clean rotated q/k (or plain v) of a layer: [batch pos head e]."""
    key = f"rot_{which}" if rp.rotary and which != "v" else which
    return clean[f"blocks.{layer}.attn.hook_{key}"]


def _cos_sin(rp: Replay, clean, layer: int, idx: Tensor):
    if not rp.rotary:
        return None, None
    return (
        gather_pos(clean[f"blocks.{layer}.attn.hook_{x}"].expand(idx.shape[0], -1, -1), idx) for x in ("cos", "sin")
    )


def _into_window(base: Tensor, new: Tensor, every: bool) -> Tensor:
    """The window's values with the patched position(s) replaced: the first window entry
    (a named position starts the window) or, when every position is patched, all of them."""
    if every:
        return new[:, :, : base.shape[2]]
    out = base.expand(new.shape[0], *base.shape[1:]).clone()
    out[:, :, :1] = new
    return out


def _receiver_z(rp: Replay, clean, layer: int, head: int, comps: str, P, resid, pos, every: bool) -> Tensor:
    """The receiver head's output on the window `pos`, its q/k/v inputs at P taken from `resid`."""
    g = rp.kv_of(head)
    start = pos[:, 0]
    cos, sin = _cos_sin(rp, clean, layer, P)
    one = {"q": slice(head, head + 1), "k": slice(g, g + 1), "v": slice(g, g + 1)}
    x = {}
    for c in "qkv":
        full = _rot(rp, clean, layer, c)[:, :, one[c]]  # clean [batch pos 1 e]
        x[c] = (full, gather_pos(full, pos)[None])  # (prefix source, window)
        if c in comps:
            new = rp.project(layer, resid, c)[..., one[c], :]
            new = new if c == "v" else rp.rotate(new, cos, sin)
            x[c] = (full, _into_window(x[c][1], new, every))
    q = x["q"][1].expand(resid.shape[0], *x["q"][1].shape[1:])
    k_win, v_win = (x[c][1].expand(resid.shape[0], *x[c][1].shape[1:]) for c in "kv")
    z = rp.attend(q, x["k"][0], x["v"][0], k_win, v_win, start)
    return z[..., 0, :]


def _receiver_pass(rp: Replay, clean, receivers: Receivers, P, resid: dict[int, Tensor], ds: IOIDataset) -> Tensor:
    """Step 2: the model from the first receiver layer on, over the window P..END only."""
    dev = P.device
    end = ds.positions["END"].to(dev)
    T = clean["blocks.0.hook_resid_pre"].shape[1]
    every = receivers.position is None
    pos = window(P[:, 0], end, T)
    start = pos[:, 0]
    zs = {(layer, h): _receiver_z(rp, clean, layer, h, receivers.components, P, resid[layer], pos, every)
          for layer, h in receivers.heads}  # fmt: skip
    first = min(layer for layer, _ in receivers.heads)
    S = next(iter(resid.values())).shape[0]
    X = gather_pos(clean[f"blocks.{first}.hook_resid_pre"], pos).expand(S, -1, -1, -1)
    for layer in range(first, rp.n_layers):
        cos, sin = _cos_sin(rp, clean, layer, pos)
        x = rp.ln1(layer, X)
        q = rp.rotate(rp.project(layer, x, "q", normed=True), cos, sin)
        k = rp.rotate(rp.project(layer, x, "k", normed=True), cos, sin)
        v = rp.project(layer, x, "v", normed=True)
        z = rp.attend(q, _rot(rp, clean, layer, "k"), clean[f"blocks.{layer}.attn.hook_v"], k, v, start)
        for (rl, h), zh in zs.items():
            if rl == layer:
                z[:, :, :, h] = zh
        a = rp.attn(layer)
        X = X + torch.einsum("sbwhe,hed->sbwd", z, a.W_O) + (0 if a.b_O is None else a.b_O)
        X = X + rp.mlp(layer, X)
    at_end = (end - start)[None, :, None, None].expand(S, -1, 1, X.shape[-1])
    final = X.gather(2, at_end)[:, :, 0]
    return rp.logit_diff(final, ds.io_ids.to(dev), ds.s_ids.to(dev))


def _check_null(rp: Replay, clean, clean_ld, receivers: Receivers, P, ds) -> None:
    """The window replay with nothing patched must give back the clean logit diff."""
    base = {layer: gather_pos(clean[f"blocks.{layer}.hook_resid_pre"], P)[None] for layer, _ in receivers.heads}
    got = _receiver_pass(rp, clean, receivers, P, base, ds)[0]
    err = float((got - clean_ld).abs().max())
    if err > 1e-3 * max(1.0, float(clean_ld.abs().max())):
        raise WorkbenchError(
            f"fast path patching cannot replay this model's attention (off by {err:.3g}); "
            "use interp.circuits.path_reference.path_patch_reference instead"
        )


def _check_heads(model, heads: list[Head], what: str) -> None:
    for layer, h in heads:
        if not (0 <= layer < model.info.n_layers and 0 <= h < model.info.n_heads):
            raise WorkbenchError(
                f"{what} head ({layer}, {h}) is outside the model ({model.info.n_layers} layers x {model.info.n_heads} heads)"
            )
