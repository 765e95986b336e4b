"""The training objective of TopK dictionaries (Gao et al. 2024, "Scaling and evaluating sparse
autoencoders"), for every layer of a Dictionary at once (pure tensor math).

  fvu    per layer: ||y - y_hat||^2 / ||y - mean(y)||^2 over the batch's tokens (the fraction of
         variance unexplained; the mean is the batch's own)
  auxk   dead-latent revival: the k_aux = d_out / 2 largest pre-activations among the latents that
         have not fired for a while (the dead mask) reconstruct the main residual e = y - y_hat
         (detached); its squared error over the same variance, scaled by min(1, dead / k_aux). Only
         the dead columns of the pre-activations are gathered and ranked (a few % of them once
         training settles), not a masked copy of all of them
  loss   sum over layers of fvu + auxk_alpha * auxk (the layers share no parameter, so each
         layer's gradients are those of its own loss)

`initialize` sets a fresh dictionary from a first batch: encoder uniform(+-1/sqrt(d_in)) from a
seeded generator; an SAE's decoder is the encoder's transpose with unit rows, a transcoder's is
zero; b_dec is the batch mean of y, and a transcoder's b_enc centres its pre-activations
(-mean(x) @ W_enc), as sparsify does.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from interp.features.dictionary import Dictionary


@dataclass
class StepOutput:
    loss: Tensor  # scalar, what is minimized
    fvu: Float[Tensor, " layer"]  # detached
    auxk: Float[Tensor, " layer"]  # detached (0 where nothing is dead)
    fired: Bool[Tensor, "layer d_sae"]  # latents active on some token of the batch


def variance(y: Float[Tensor, "layer pos d"]) -> Float[Tensor, " layer"]:
    """Per layer, the summed squared deviation of y from its batch mean (float32)."""
    y = y.float()
    return (y - y.mean(1, keepdim=True)).pow(2).sum((1, 2)).clamp(min=1e-12)


def auxk_loss(d: Dictionary, pre: Float[Tensor, "layer pos d_sae"], e: Float[Tensor, "layer pos d_out"],
              dead: Bool[Tensor, "layer d_sae"], var: Float[Tensor, " layer"]) -> Float[Tensor, " layer"]:  # fmt: skip
    """The AuxK term per layer (module doc); 0 for layers with no dead latent."""
    n_dead = dead.sum(-1)  # [layer]
    most = int(n_dead.max())
    if most == 0:
        return torch.zeros(pre.shape[0], device=pre.device)
    k_aux = min(d.cfg.d_out // 2, most)
    # only the dead columns are read: each layer's dead latents (padded to the most any layer has)
    cols = dead.to(torch.int8).argsort(dim=-1, descending=True, stable=True)[:, :most]  # [layer, most], dead first
    pad = torch.arange(most, device=pre.device)[None] >= n_dead[:, None]
    pos = pre.shape[1]
    cand = pre.gather(-1, cols[:, None, :].expand(-1, pos, -1)).masked_fill(pad[:, None, :], float("-inf"))
    values, j = cand.topk(k_aux, dim=-1, sorted=False)
    values = torch.where(torch.isfinite(values), values.relu(), torch.zeros_like(values))  # a layer with fewer dead
    idx = cols[:, None, :].expand(-1, pos, -1).gather(-1, j)
    n, pos, _ = idx.shape
    offsets = (torch.arange(n, device=idx.device) * d.cfg.d_sae)[:, None, None]
    w = d.W_dec.reshape(n * d.cfg.d_sae, d.cfg.d_out)  # in its own dtype: CUDA's bag has no bf16 weight gradient
    e_hat = torch.nn.functional.embedding_bag((idx + offsets).reshape(n * pos, k_aux), w, mode="sum",
                                              per_sample_weights=values.reshape(n * pos, k_aux).to(w.dtype))  # fmt: skip
    err = (e_hat.reshape(n, pos, -1).float() - e.detach().float()).pow(2).sum((1, 2))
    scale = (n_dead.float() / (d.cfg.d_out // 2)).clamp(max=1.0)
    return scale * err / var


DECODES = ("sparse", "dense")


def step_loss(d: Dictionary, x: Float[Tensor, "layer pos d_in"], y: Float[Tensor, "layer pos d_out"],
              dead: Bool[Tensor, "layer d_sae"] | None = None, auxk_alpha: float = 0.0,
              decode: str = "sparse") -> StepOutput:  # fmt: skip
    """The objective on one batch of every layer's activations (module doc). `decode`: "sparse" (an
    embedding bag over the k chosen decoder rows: k rows a token, but its backward scatters k rows a
    token into W_dec's gradient one by one) or "dense" (the activations scattered into a dense
    [layer, pos, d_sae] matrix and multiplied by W_dec: d_sae rows a token on matrix units, and a
    backward that is two more products); the same loss and gradients either way."""
    pre = d.pre_acts(x)
    acts, idx = d.select(pre)
    if decode == "dense":
        dense = torch.zeros_like(pre).scatter(-1, idx, acts)
        y_hat = d.decode(dense, x)
    else:
        y_hat = d.decode_sparse(acts, idx, x)
    e = y.float() - y_hat.float()
    var = variance(y)
    fvu = e.pow(2).sum((1, 2)) / var
    loss = fvu.sum()
    aux = torch.zeros_like(fvu)
    if dead is not None and auxk_alpha > 0:
        aux = auxk_loss(d, pre, e, dead, var)
        loss = loss + auxk_alpha * aux.sum()
    fired = torch.zeros(pre.shape[0], d.cfg.d_sae, dtype=torch.bool, device=pre.device)
    fired.scatter_(1, idx.reshape(pre.shape[0], -1), (acts > 0).reshape(pre.shape[0], -1))
    return StepOutput(loss, fvu.detach(), aux.detach(), fired)


@torch.no_grad()
def initialize(d: Dictionary, x: Float[Tensor, "layer pos d_in"], y: Float[Tensor, "layer pos d_out"], seed: int) -> None:
    """Fresh parameters from the first batch (module doc)."""
    gen = torch.Generator().manual_seed(seed)
    bound = d.cfg.d_in ** -0.5
    w = (torch.rand(d.W_enc.shape, generator=gen) * 2 - 1) * bound
    d.W_enc.copy_(w)
    d.b_dec.copy_(y.float().mean(1))
    if d.site.is_transcoder:
        d.W_dec.zero_()
        d.b_enc.copy_(-(x.float().mean(1)[:, None, :] @ d.W_enc.float())[:, 0])
    else:
        d.W_dec.copy_(d.W_enc.transpose(1, 2))
        normalize_decoder(d)
        d.b_enc.zero_()
    if d.W_skip is not None:
        d.W_skip.zero_()


def rms_scale(t: Float[Tensor, "layer pos d"]) -> Float[Tensor, " layer"]:
    """Per layer, sqrt(mean ||t||^2 / d): dividing by it gives activations of unit mean square per
    dimension, so one learning rate suits every layer and model (SAELens's
    "expected_average_only_in"); FVU does not change."""
    return t.float().pow(2).sum(-1).mean(-1).div(t.shape[-1]).sqrt().clamp(min=1e-8)


@torch.no_grad()
def fold_scales(d: Dictionary, s_in: Float[Tensor, " layer"], s_out: Float[Tensor, " layer"]) -> None:
    """Turn a dictionary trained on x / s_in -> y / s_out into one on x -> y, in place:
    W_enc / s_in; W_dec, b_dec * s_out; W_skip * s_out / s_in (an SAE has s_in == s_out, so its
    input's b_dec shift stays consistent)."""
    d.W_enc.div_(s_in[:, None, None])
    d.W_dec.mul_(s_out[:, None, None])
    d.b_dec.mul_(s_out[:, None])
    if d.W_skip is not None:
        d.W_skip.mul_((s_out / s_in)[:, None, None])


@torch.no_grad()
def normalize_decoder(d: Dictionary) -> None:
    """Unit-norm decoder rows (SAEs: a latent's scale lives in its activation)."""
    d.W_dec.div_(d.W_dec.norm(dim=-1, keepdim=True).clamp(min=1e-8))


@torch.no_grad()
def remove_parallel_grad(d: Dictionary) -> None:
    """Drop the part of W_dec's gradient along each row (it would only change the row's norm,
    which normalize_decoder undoes)."""
    g, w = d.W_dec.grad, d.W_dec
    if g is not None:
        g.sub_((g * w).sum(-1, keepdim=True) * w)
