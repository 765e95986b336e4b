"""Expected attention patterns, one per head kind, in a registry.

Each builder maps tokens [batch pos] to a 0/1 pattern [batch dest src] that says where a
perfect head of that kind attends. They match TransformerLens's `get_*_detection_pattern`
(so scores are comparable with `detect_head`) but work on a whole batch at once:

- previous-token: dest i attends to src i-1.
- duplicate-token: dest i attends to every earlier j < i with tokens[j] == tokens[i].
- induction: dest i attends to j+1 for every earlier copy j < i of tokens[i] (prefix
  matching; j+1 <= i, the diagonal included, as in TL).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from jaxtyping import Float, Int
from torch import Tensor

PatternFn = Callable[[Int[Tensor, "batch pos"]], Float[Tensor, "batch dest src"]]
PATTERNS: dict[str, PatternFn] = {}
TL_NAMES = {"previous-token": "previous_token_head", "duplicate-token": "duplicate_token_head", "induction": "induction_head"}


def register_pattern(name: str) -> Callable[[PatternFn], PatternFn]:
    """Add an expected-pattern builder under `name`; refuses duplicates."""

    def add(fn: PatternFn) -> PatternFn:
        if name in PATTERNS:
            raise ValueError(f"head kind {name!r} is already registered")
        PATTERNS[name] = fn
        return fn

    return add


@register_pattern("previous-token")
def previous_token(tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch dest src"]:
    batch, pos = tokens.shape
    eye = torch.eye(pos, device=tokens.device)
    shifted = torch.zeros(pos, pos, device=tokens.device)
    shifted[1:, :-1] = eye[1:, 1:]
    return shifted.expand(batch, pos, pos).clone()


@register_pattern("duplicate-token")
def duplicate_token(tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch dest src"]:
    same = tokens[:, :, None] == tokens[:, None, :]
    strictly_earlier = torch.ones_like(same[0]).tril(-1)
    return (same & strictly_earlier).float()


@register_pattern("induction")
def induction(tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch dest src"]:
    dup = duplicate_token(tokens)
    out = torch.zeros_like(dup)
    out[:, :, 1:] = dup[:, :, :-1]  # attend to the token after each earlier copy
    return out.tril()


def expected_patterns(tokens: Int[Tensor, "batch pos"], kinds: tuple[str, ...]) -> Float[Tensor, "batch kind dest src"]:
    return torch.stack([PATTERNS[k](tokens) for k in kinds], dim=1)
