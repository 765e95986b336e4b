"""The dictionary type: sparse autoencoders and transcoders, one per layer, stacked.

A `Dictionary` holds one dictionary for each of its `layers` at one site (sites.py), with the
parameters stacked on a leading layer axis so that all layers train and run in one batched call:

    pre   = (x - b_dec·[apply_b_dec_to_input]) @ W_enc + b_enc        [.., d_sae]
    acts  = TopK(pre): the k largest pre-activations, ReLU'd, the rest 0   (or ReLU / JumpReLU)
    y_hat = acts @ W_dec + b_dec (+ x @ W_skip.T with a skip connection)

W_enc [layer, d_in, d_sae], b_enc [layer, d_sae], W_dec [layer, d_sae, d_out], b_dec [layer, d_out],
W_skip [layer, d_out, d_in] (optional), threshold [layer, d_sae] (JumpReLU only): SAELens's
orientation, so its files map one to one. A *feature* is one latent: its key is the encoder column
W_enc[:, f], its value the decoder row W_dec[f].

TopK takes the k largest pre-activations and then the ReLU (SAELens's order); sparsify takes the
ReLU first. Both give the same activations (ReLU is monotone and only zeroes), so dictionaries of
either tool decode the same here.

The sparse decode (`decode_sparse`) is a weighted embedding bag over the k chosen decoder rows, so
the decoder costs k, not d_sae, rows a token; `decode` is the plain dense product it is tested
against.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

from interp.errors import WorkbenchError
from interp.features.sites import get_site

ACTIVATIONS = ("topk", "relu", "jumprelu")


@dataclass
class DictionaryConfig:
    site: str  # interp.features.sites name: "mlp" (transcoder), "mlp_out", "resid_pre", "resid_post"
    layers: list[int]  # the model layers, one dictionary each, in the order of the leading axis
    d_in: int  # width read (d_model)
    d_out: int  # width written (d_model)
    d_sae: int  # latents (features) per layer
    k: int | None = 32  # TopK: latents kept per token (None for relu / jumprelu)
    activation: str = "topk"  # "topk" | "relu" | "jumprelu"
    skip: bool = False  # a linear skip connection x @ W_skip.T (skip transcoders)
    apply_b_dec_to_input: bool = False  # encode x - b_dec (SAEs of SAELens and sparsify); transcoders: False
    model: dict = field(default_factory=dict)  # name, d_model, n_layers, d_vocab of the model it was made for
    source: str = "interp"  # who made it: "interp" | "saelens" | "sparsify"

    def to_dict(self) -> dict:
        return asdict(self)

    def check(self) -> DictionaryConfig:
        """One-line errors for sizes that cannot make a dictionary."""
        get_site(self.site)
        if self.activation not in ACTIVATIONS:
            raise WorkbenchError(f"unknown activation {self.activation!r}; choose {', '.join(ACTIVATIONS)}")
        if self.d_sae < 1:
            raise WorkbenchError(f"the dictionary size must be at least 1 latent, got {self.d_sae}")
        if self.activation == "topk" and (self.k is None or not 1 <= self.k <= self.d_sae):
            raise WorkbenchError(f"k must be between 1 and the dictionary size {self.d_sae}, got {self.k}")
        if not self.layers or len(set(self.layers)) != len(self.layers):
            raise WorkbenchError(f"a dictionary needs distinct layers, got {self.layers}")
        if self.skip and not get_site(self.site).is_transcoder:
            raise WorkbenchError("a skip connection belongs to a transcoder (site 'mlp'), not an SAE")
        return self


class Dictionary(nn.Module):
    """One dictionary per layer of `cfg.layers`, parameters stacked on a leading layer axis."""

    def __init__(self, cfg: DictionaryConfig, device=None, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.cfg = cfg.check()
        n, di, do, m = len(cfg.layers), cfg.d_in, cfg.d_out, cfg.d_sae
        kw = dict(device=device, dtype=dtype)
        self.W_enc = nn.Parameter(torch.zeros(n, di, m, **kw))
        self.b_enc = nn.Parameter(torch.zeros(n, m, **kw))
        self.W_dec = nn.Parameter(torch.zeros(n, m, do, **kw))
        self.b_dec = nn.Parameter(torch.zeros(n, do, **kw))
        self.W_skip = nn.Parameter(torch.zeros(n, do, di, **kw)) if cfg.skip else None
        self.threshold = nn.Parameter(torch.zeros(n, m, **kw), requires_grad=False) if cfg.activation == "jumprelu" else None

    def __repr__(self) -> str:
        c = self.cfg
        act = f"top{c.k}" if c.activation == "topk" else c.activation
        return (f"Dictionary(site={c.site}, layers={_span(c.layers)}, d_sae={c.d_sae}, {act}, skip={c.skip}, "
                f"model={c.model.get('name')}, source={c.source})")  # fmt: skip

    @property
    def layers(self) -> list[int]:
        return self.cfg.layers

    @property
    def site(self):
        return get_site(self.cfg.site)

    def index(self, layer: int) -> int:
        """Position of `layer` on the leading axis (a one-line error for a layer it lacks)."""
        if layer not in self.cfg.layers:
            raise WorkbenchError(f"this dictionary has no layer {layer}; its layers: {_span(self.cfg.layers)}")
        return self.cfg.layers.index(layer)

    # -- all layers at once (training, streaming) -----------------------------------------------
    def pre_acts(self, x: Float[Tensor, "layer pos d_in"]) -> Float[Tensor, "layer pos d_sae"]:
        if self.cfg.apply_b_dec_to_input:
            x = x - self.b_dec[:, None].to(x.dtype)
        return torch.baddbmm(self.b_enc[:, None].to(x.dtype), x, self.W_enc.to(x.dtype))

    def select(self, pre: Float[Tensor, "layer pos d_sae"]) -> tuple[Tensor, Tensor]:
        """(acts, indices) [layer, pos, k] of the active latents: TopK's k, or for ReLU / JumpReLU
        as many as the busiest token of the batch has (the others' slots hold 0)."""
        if self.cfg.activation == "topk":
            values, idx = pre.topk(self.cfg.k, dim=-1, sorted=False)
            return values.relu(), idx
        dense = self.activate(pre)
        width = max(int((dense != 0).sum(-1).max()), 1)
        values, idx = dense.topk(width, dim=-1, sorted=False)
        return values, idx

    def activate(self, pre: Tensor) -> Tensor:
        """The dense activations of pre-activations [layer, .., d_sae]."""
        if self.cfg.activation == "topk":
            values, idx = pre.topk(self.cfg.k, dim=-1, sorted=False)
            return torch.zeros_like(pre).scatter_(-1, idx, values.relu())
        if self.cfg.activation == "relu":
            return pre.relu()
        thr = self.threshold.to(pre.dtype).reshape(pre.shape[0], *([1] * (pre.dim() - 2)), -1)
        return pre * (pre > thr)

    def decode_sparse(self, acts: Float[Tensor, "layer pos k"], idx: Int[Tensor, "layer pos k"],
                      x: Float[Tensor, "layer pos d_in"] | None = None) -> Float[Tensor, "layer pos d_out"]:  # fmt: skip
        """Sum of the chosen decoder rows weighted by their activations, + b_dec (+ skip), every
        layer in one embedding bag over the stacked decoder."""
        n, pos, k = idx.shape
        offsets = (torch.arange(n, device=idx.device) * self.cfg.d_sae)[:, None, None]
        w = self.W_dec.reshape(n * self.cfg.d_sae, self.cfg.d_out)
        out = nn.functional.embedding_bag((idx + offsets).reshape(n * pos, k), w, mode="sum",
                                          per_sample_weights=acts.reshape(n * pos, k).to(w.dtype))  # fmt: skip
        out = out.reshape(n, pos, -1) + self.b_dec[:, None]
        return self._skip(out, x)

    def decode(self, acts: Float[Tensor, "layer pos d_sae"], x: Tensor | None = None) -> Float[Tensor, "layer pos d_out"]:
        """The dense decode: acts @ W_dec + b_dec (+ skip)."""
        out = torch.baddbmm(self.b_dec[:, None].to(acts.dtype), acts, self.W_dec.to(acts.dtype))
        return self._skip(out, x)

    def _skip(self, out: Tensor, x: Tensor | None) -> Tensor:
        if self.W_skip is None:
            return out
        if x is None:
            raise ValueError("a skip dictionary decodes with its input x")
        return out + torch.bmm(x.to(out.dtype), self.W_skip.transpose(1, 2).to(out.dtype))

    def forward(self, x: Float[Tensor, "layer pos d_in"]) -> Float[Tensor, "layer pos d_out"]:
        acts, idx = self.select(self.pre_acts(x))
        return self.decode_sparse(acts, idx, x)

    # -- one layer (analysis) ----------------------------------------------------------------
    def rows(self, lo: int, hi: int, detach: bool = False) -> Dictionary:
        """The dictionaries of layers[lo:hi] as a Dictionary whose tensors are slices of these
        parameters: gradients of a loss on it reach this one (a chunk of layers trains with less
        memory); `detach` for analysis."""
        cfg = DictionaryConfig(**{**self.cfg.to_dict(), "layers": self.cfg.layers[lo:hi]})
        part = Dictionary.__new__(Dictionary)
        nn.Module.__init__(part)
        part.cfg = cfg
        for name in ("W_enc", "b_enc", "W_dec", "b_dec", "W_skip", "threshold"):
            t = getattr(self, name)
            t = None if t is None else t[lo:hi]
            setattr(part, name, t.detach() if detach and t is not None else t)  # a plain attribute: part has no parameters
        return part

    def layer_view(self, layer: int) -> Dictionary:
        """A one-layer Dictionary sharing this one's tensors (no copy, no gradient)."""
        i = self.index(layer)
        return self.rows(i, i + 1, detach=True)

    def encode(self, x: Float[Tensor, "*batch d_in"], layer: int) -> Float[Tensor, "*batch d_sae"]:
        """Dense feature activations of `layer`'s dictionary for inputs of any leading shape."""
        one = self.layer_view(layer) if len(self.layers) > 1 else self
        flat = x.reshape(1, -1, x.shape[-1]).to(self.W_enc.dtype)
        return one.activate(one.pre_acts(flat)).reshape(*x.shape[:-1], -1)

    def reconstruct(self, x: Float[Tensor, "*batch d_in"], layer: int) -> Float[Tensor, "*batch d_out"]:
        """`layer`'s dictionary output for inputs of any leading shape."""
        one = self.layer_view(layer) if len(self.layers) > 1 else self
        flat = x.reshape(1, -1, x.shape[-1]).to(self.W_enc.dtype)
        return one(flat).reshape(*x.shape[:-1], -1)

    def tensors(self) -> dict[str, Tensor]:
        names = ("W_enc", "b_enc", "W_dec", "b_dec", "W_skip", "threshold")
        return {n: getattr(self, n).detach() for n in names if getattr(self, n) is not None}

    def load_tensors(self, tensors: dict[str, Tensor]) -> Dictionary:
        """Copy `tensors` (the names of `tensors()`, stacked shapes) into the parameters."""
        for name, t in self.tensors().items():
            got = tensors.get(name)
            if got is None or tuple(got.shape) != tuple(t.shape):
                shape = None if got is None else tuple(got.shape)
                raise WorkbenchError(f"dictionary tensor {name} has shape {shape}, expected {tuple(t.shape)}; "
                                     "the file does not match its config")  # fmt: skip
            getattr(self, name).data.copy_(got)
        return self


def _span(layers: list[int]) -> str:
    if len(layers) > 2 and layers == list(range(layers[0], layers[-1] + 1)):
        return f"{layers[0]}..{layers[-1]}"
    return ",".join(str(la) for la in layers)
