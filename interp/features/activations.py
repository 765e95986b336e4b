"""Token tables for dictionaries, and every layer's site activations from one forward pass.

`token_table` cuts a corpus into windows [window, seq_len] (int32, BOS first when the tokenizer has
one, -1 = padding) in a fixed order for a seed; a built mixture (interp.data.mixture, spec "mix" or
"mix:heldout") is read from its token store, any other corpus spec is tokenized on the fly.

`capture_sites` runs one batch of windows through the model with a hook on each layer's site
input and output, and stops the pass right after the deepest one: the activations of all
layers come from one forward stream, and later blocks and the unembedding are never computed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from interp import hooks
from interp.errors import WorkbenchError
from interp.features.sites import Site

if TYPE_CHECKING:
    from interp.models import Model


def token_table(model: Model, corpus: str, seq_len: int, n_tokens: int, seed: int = 0) -> Int[Tensor, "window seq"]:
    """Windows holding `n_tokens` text tokens of `corpus` (module doc); refuses a corpus that
    has fewer."""
    from interp.data.corpus import open_corpus, windows
    from interp.data.mixture import is_mixture_spec
    from interp.data.token_store import mixture_table
    from interp.memories.build import window_table

    if seq_len > model.info.n_ctx:
        raise WorkbenchError(f"seq_len {seq_len} exceeds {model.info.name}'s context of {model.info.n_ctx}")
    if n_tokens < 1:
        raise WorkbenchError(f"the number of tokens must be positive, got {n_tokens}")
    bos = model.bos_token_id
    if is_mixture_spec(corpus):
        return mixture_table(corpus, model.tokenizer, seq_len, n_tokens, seed, bos)
    chunks = list(windows(open_corpus(corpus), model.tokenizer, seq_len, seed, n_tokens, bos))
    table = window_table(chunks, seq_len)
    have = int((table >= 0).sum()) - (len(table) if bos is not None else 0)
    if have < n_tokens:
        raise WorkbenchError(f"corpus {corpus!r} holds only {have:,} tokens but {n_tokens:,} were asked for; "
                             "ask for fewer tokens or use a larger corpus (build one: `interp features corpus`)")  # fmt: skip
    return table


def valid_positions(batch: Int[Tensor, "batch seq"], has_bos: bool) -> Bool[Tensor, "batch seq"]:
    """Positions whose activations count: not padding, and not BOS (its activations are outliers
    that no dictionary should spend latents on)."""
    valid = batch >= 0
    if has_bos:
        valid[:, 0] = False
    return valid


@torch.no_grad()
def capture_sites(model: Model, batch: Int[Tensor, "batch seq"], site: Site, layers: list[int]
                  ) -> tuple[Float[Tensor, "layer pos d_in"], Float[Tensor, "layer pos d_out"]]:  # fmt: skip
    """The site's inputs and outputs of `layers` for every position of `batch` (flattened
    batch-major, padding included), from one forward pass that stops after the deepest hook.
    For an SAE site the two are the same tensor."""
    pad = model.tokenizer.pad_token_id if model.tokenizer.pad_token_id is not None else 0
    got_in: dict[int, Tensor] = {}
    got_out: dict[int, Tensor] = {}

    def keeper(store: dict[int, Tensor], layer: int):
        def keep(act: Tensor, hook=None):
            store[layer] = act.detach().reshape(-1, act.shape[-1])

        return keep

    fwd = []
    for layer in layers:
        if site.is_transcoder:
            fwd.append((site.input_hook(layer), keeper(got_in, layer)))
        fwd.append((site.output_hook(layer), keeper(got_out, layer)))
    last = site.output_hook(max(layers))
    tokens = batch.long().masked_fill(batch < 0, pad).to(model.device)
    hooks.run_until(model, tokens, fwd, last)
    y = torch.stack([got_out[layer] for layer in layers])
    x = torch.stack([got_in[layer] for layer in layers]) if site.is_transcoder else y
    return x, y
