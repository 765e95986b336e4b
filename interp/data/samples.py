"""Text sampled from the model itself: a corpus source that speaks the model's own distribution
(what its features fire on when it writes, not only when it reads)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from interp.models import Model


@torch.no_grad()
def sample_texts(model: Model, n_tokens: int, seed: int = 0, batch: int = 16, length: int = 256) -> Iterator[tuple[str, str]]:
    """Documents of `length` new tokens sampled at temperature 1 from BOS alone, `batch` at a time,
    until about `n_tokens` tokens are made."""
    torch.manual_seed(seed)
    bos = model.bos_token_id if model.bos_token_id is not None else model.tokenizer.eos_token_id
    made, i = 0, 0
    while made < n_tokens:
        start = torch.full((batch, 1), bos, dtype=torch.long, device=model.device)
        out = model.bridge.generate(start, max_new_tokens=length, do_sample=True, temperature=1.0, verbose=False,
                                    stop_at_eos=False, return_type="tokens")  # fmt: skip
        for row in out[:, 1:].tolist():
            yield f"model/{seed}/{i}", model.tokenizer.decode(row, skip_special_tokens=True)
            i += 1
        made += batch * length
