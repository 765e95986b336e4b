"""Evaluating dictionaries on held-out text, as SAELens / SAEBench report it.

Per layer, over every valid (non-BOS, non-padding) token of the evaluation windows:
  fvu            sum ||y - y_hat||^2 / sum ||y - mean(y)||^2 (mean over the whole evaluation set)
  l0             mean number of active latents per token
  dead           share of latents that never fired on the evaluation tokens
  dense          share of latents that fired on more than 10% of them
  density        a histogram of log10(firing frequency) of the latents that fired (bins edges below)
  ce_clean       the model's next-token cross-entropy (nats/token)
  ce_spliced     ... with this layer's site output replaced by the dictionary's output
  ce_zero        ... with it replaced by 0 (the zero-ablation baseline)
  ce_recovered   (ce_zero - ce_spliced) / (ce_zero - ce_clean): 1 = as good as the model
  kl             KL(clean || spliced), nats/token
and once with every layer's dictionary spliced in together ("all").

Splicing replaces every position except BOS (where no dictionary was trained: its activations
are outliers the training leaves out, and one bad BOS row would reach every later token through
attention); the BOS row keeps the model's own activation.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from interp.errors import WorkbenchError
from interp.features.activations import capture_sites, token_table, valid_positions
from interp.features.dictionary import Dictionary
from interp.types import Progress

if TYPE_CHECKING:
    from interp.models import Model

DENSITY_EDGES = [-8.0 + 0.5 * i for i in range(17)]  # log10 frequency bins, 1e-8 .. 1
DENSE_ABOVE = 0.1


@dataclass
class LayerEval:
    layer: int
    fvu: float
    l0: float
    dead: float
    dense: float
    ce_clean: float = math.nan
    ce_spliced: float = math.nan
    ce_zero: float = math.nan
    ce_recovered: float = math.nan
    kl: float = math.nan
    density: list[int] = field(default_factory=list)  # counts per DENSITY_EDGES bin (fired latents)


@dataclass
class Evaluation:
    corpus: str
    n_tokens: int  # valid tokens evaluated
    layers: list[LayerEval]
    all_spliced: dict  # ce_spliced, ce_recovered (vs every layer zeroed), kl with every layer spliced
    density_edges: list[float] = field(default_factory=lambda: list(DENSITY_EDGES))
    ce_targets: int = 0  # next-token targets the CE / KL numbers average over

    def to_dict(self) -> dict:
        return asdict(self)


def splice_hooks(d: Dictionary, layers: list[int], keep: Tensor | None, zero: bool = False) -> list:
    """Hooks that replace `layers`' site outputs by the dictionary's (or by 0 with `zero`), except
    at positions where `keep` [batch, pos] is True."""
    site = d.site
    hooks, inputs = [], {}
    for layer in layers:
        one = d.layer_view(layer)

        def grab(act, hook=None, layer=layer):
            inputs[layer] = act
            return act

        def put(act, hook=None, layer=layer, one=one):
            x = inputs.pop(layer, act)
            new = torch.zeros_like(act) if zero else one(x.reshape(1, -1, x.shape[-1]).to(one.W_enc.dtype))
            new = new.reshape(act.shape).to(act.dtype)
            return torch.where(keep[..., None].to(act.device), act, new) if keep is not None else new

        if site.is_transcoder and not zero:
            hooks.append((site.input_hook(layer), grab))
        hooks.append((site.output_hook(layer), put))
    return hooks


class _Sums:
    """Running sums of one evaluation, float64."""

    def __init__(self, n_layers: int, d_sae: int, d_out: int, device):
        z = dict(dtype=torch.float64, device=device)
        self.err, self.sq, self.l0 = torch.zeros(n_layers, **z), torch.zeros(n_layers, **z), torch.zeros(n_layers, **z)
        self.sum_y = torch.zeros(n_layers, d_out, **z)
        self.fired = torch.zeros(n_layers, d_sae, **z)
        self.tokens = 0
        self.ce = {}  # name -> [sum nats, sum kl]
        self.targets = 0


def _ce_kl(logits: Tensor, clean_logp: Tensor | None, targets: Tensor, ok: Tensor) -> tuple[float, float]:
    logp = logits[:, :-1].float().log_softmax(-1)
    nll = -logp.gather(-1, targets.clamp(min=0)[..., None])[..., 0]
    ce = float(nll[ok].double().sum())
    kl = 0.0 if clean_logp is None else float((clean_logp.exp() * (clean_logp - logp)).sum(-1)[ok].double().sum())
    return ce, kl


@torch.no_grad()
def _batch(model: Model, d: Dictionary, batch: Tensor, sums: _Sums, splice: list[int], all_at_once: bool) -> None:
    has_bos = model.bos_token_id is not None
    valid = valid_positions(batch, has_bos)
    flat = valid.flatten().to(model.device)
    x, y = capture_sites(model, batch, d.site, d.layers)
    x, y = x[:, flat].to(d.W_enc.dtype), y[:, flat].double()
    acts, idx = d.select(d.pre_acts(x))
    y_hat = d.decode_sparse(acts, idx, x).double()
    sums.err += (y - y_hat).pow(2).sum((1, 2))
    sums.sq += y.pow(2).sum((1, 2))
    sums.sum_y += y.sum(1)
    sums.l0 += (acts > 0).sum((1, 2)).double()
    sums.fired.scatter_add_(1, idx.reshape(len(d.layers), -1), (acts > 0).reshape(len(d.layers), -1).double())
    sums.tokens += int(flat.sum())
    if not splice and not all_at_once:
        return
    pad = model.tokenizer.pad_token_id if model.tokenizer.pad_token_id is not None else 0
    tokens = batch.long().masked_fill(batch < 0, pad).to(model.device)
    targets, ok = tokens[:, 1:], (batch[:, 1:] >= 0).to(model.device)
    keep = ~valid_positions(batch, has_bos) if has_bos else None
    clean = model(tokens)
    clean_logp = clean[:, :-1].float().log_softmax(-1)
    runs = [("clean", [])] + [(f"{kind}{layer}", splice_hooks(d, [layer], keep, zero=kind == "zero"))
                              for layer in splice for kind in ("splice", "zero")]  # fmt: skip
    if all_at_once:
        runs += [("splice_all", splice_hooks(d, d.layers, keep)), ("zero_all", splice_hooks(d, d.layers, keep, zero=True))]
    for name, fwd in runs:
        logits = clean if name == "clean" else model.run_with_hooks(tokens, fwd_hooks=fwd)
        ce, kl = _ce_kl(logits, clean_logp, targets, ok)
        got = sums.ce.setdefault(name, [0.0, 0.0])
        got[0] += ce
        got[1] += kl
    sums.targets += int(ok.sum())


def _recovered(clean: float, spliced: float, zero: float) -> float:
    return (zero - spliced) / (zero - clean) if zero != clean else math.nan


def _layer_rows(d: Dictionary, sums: _Sums, splice: list[int]) -> list[LayerEval]:
    n = max(sums.tokens, 1)
    var = sums.sq - sums.sum_y.pow(2).sum(-1) / n
    freq = sums.fired / n
    logf = freq.clamp(min=1e-12).log10()
    edges = torch.tensor(DENSITY_EDGES, dtype=torch.float64, device=freq.device)
    per = lambda name: sums.ce[name][0] / max(sums.targets, 1)
    rows = []
    for i, layer in enumerate(d.layers):
        fired = logf[i][freq[i] > 0]
        hist = torch.histogram(fired.cpu().clamp(DENSITY_EDGES[0], DENSITY_EDGES[-1]), edges.cpu())[0]
        row = LayerEval(layer, float(sums.err[i] / var[i].clamp(min=1e-30)), float(sums.l0[i] / n),
                        float((freq[i] == 0).double().mean()), float((freq[i] > DENSE_ABOVE).double().mean()),
                        density=[int(c) for c in hist])  # fmt: skip
        if layer in splice:
            row.ce_clean, row.ce_spliced, row.ce_zero = per("clean"), per(f"splice{layer}"), per(f"zero{layer}")
            row.ce_recovered = _recovered(row.ce_clean, row.ce_spliced, row.ce_zero)
            row.kl = sums.ce[f"splice{layer}"][1] / max(sums.targets, 1)
        rows.append(row)
    return rows


def evaluate(model: Model, d: Dictionary, corpus: str = "mix:heldout", n_tokens: int = 100_000, seq_len: int = 128,
             batch_size: int = 16, splice: list[int] | None = None, all_at_once: bool = True, seed: int = 0,
             ce_tokens: int | None = None, progress: Progress | None = None) -> Evaluation:  # fmt: skip
    """Evaluate `d` on `n_tokens` of `corpus` (module doc). `splice`: the layers whose CE/KL to
    measure alone (default every layer of d; [] for none); `all_at_once`: also every layer together;
    `ce_tokens`: splice on the first windows holding this many tokens only (default all: each
    spliced layer costs two forward passes, the other numbers one pass for all layers)."""
    from interp.features.formats import check_for_model

    check_for_model(d, model)
    splice = list(d.layers) if splice is None else list(splice)
    if any(la not in d.layers for la in splice):
        raise WorkbenchError(f"layers {splice} to splice are not all in the dictionary's layers {d.layers}")
    if batch_size < 1:
        raise WorkbenchError(f"batch_size must be positive, got {batch_size}")
    table = token_table(model, corpus, seq_len, n_tokens, seed)
    sums = _Sums(len(d.layers), d.cfg.d_sae, d.cfg.d_out, model.device)
    report = progress or (lambda done, total, message: None)
    ce_limit = n_tokens if ce_tokens is None else ce_tokens
    for lo in range(0, len(table), batch_size):
        ce_on = sums.tokens < ce_limit
        _batch(model, d, table[lo : lo + batch_size], sums, splice if ce_on else [], all_at_once and ce_on)
        report(sums.tokens, n_tokens, "evaluating")
    every = {}
    if all_at_once:
        per = lambda name: sums.ce[name][0] / max(sums.targets, 1)
        every = {"ce_clean": per("clean"), "ce_spliced": per("splice_all"), "ce_zero": per("zero_all"),
                 "ce_recovered": _recovered(per("clean"), per("splice_all"), per("zero_all")),
                 "kl": sums.ce["splice_all"][1] / max(sums.targets, 1)}  # fmt: skip
    return Evaluation(corpus, sums.tokens, _layer_rows(d, sums, splice), every, ce_targets=sums.targets)
