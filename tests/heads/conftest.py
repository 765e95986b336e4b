"""Tiny models for the head tests: one with hand-planted previous-token and induction heads,
and a 1-layer attention-only model (negative control) trained briefly on repeated tokens."""

from __future__ import annotations

import pytest
import torch

from interp.models.inhouse import NativeSpec, build_native

V, P = 24, 32  # planted model: vocabulary and context
PREV, INDUCTION = (0, 0), (1, 0)  # the planted heads
SHARP = 60.0  # attention logit of a planted match (before the 1/sqrt(d_head) scale)
UNEMBED = 20.0  # logit the induction head gives the token it copies


def _params(native) -> dict[str, torch.Tensor]:
    return dict(native.named_parameters())


def _find(params, layer: int | None, part: str) -> torch.Tensor:
    hits = [p for n, p in params.items() if (layer is None or f"layers.{layer}." in n) and n.endswith(part)]
    assert len(hits) == 1, (layer, part, [n for n in params])
    return hits[0]


@torch.no_grad()
def build_planted():
    """2-layer attention-only, no norm, learned positions. Residual = [token one-hot (V) |
    position one-hot (P) | previous-token one-hot (V) | output one-hot (V)].
    L0H0: attends from p to p-1 (positions) and writes the token it reads into the
    previous-token slot. L1H0: queries with its token, keys with the previous-token slot
    (prefix matching), writes the token it reads into the output slot, which W_U reads.
    All other heads are zero (uniform attention, no output)."""
    d_head, d_model = max(V, P), 3 * V + P
    tok, pos, prev, out = 0, V, V + P, 2 * V + P
    spec = NativeSpec(n_layers=2, d_model=d_model, n_heads=2, d_head=d_head, n_ctx=P, d_vocab=V,
                      attn_only=True, normalization=None, positional="standard")
    model = build_native(spec, None)
    params = _params(model.bridge.original_model)
    for p in params.values():
        p.zero_()
    eye_v, eye_p = torch.eye(V), torch.eye(P)
    _find(params, None, "tok_embed._original_component.weight")[:, tok:tok + V] = eye_v
    _find(params, None, "pos._original_component.weight")[:, pos:pos + P] = eye_p
    _find(params, None, "head._original_component.weight")[:, out:out + V] = UNEMBED * eye_v
    h = slice(0, d_head)  # head 0's rows/columns in the fused q/k/v/o weights
    # layer 0, head 0: previous token
    q, k = _find(params, 0, "q._original_component.weight"), _find(params, 0, "k._original_component.weight")
    v, o = _find(params, 0, "v._original_component.weight"), _find(params, 0, "o._original_component.weight")
    for p_ in range(1, P):
        q[h][p_ - 1, pos + p_] = SHARP  # query at p looks for key position p-1
    k[h][:P, pos:pos + P] = eye_p
    v[h][:V, tok:tok + V] = eye_v
    o[:, h][prev:prev + V, :V] = eye_v
    # layer 1, head 0: induction
    q, k = _find(params, 1, "q._original_component.weight"), _find(params, 1, "k._original_component.weight")
    v, o = _find(params, 1, "v._original_component.weight"), _find(params, 1, "o._original_component.weight")
    q[h][:V, tok:tok + V] = SHARP * eye_v
    k[h][:V, prev:prev + V] = eye_v
    v[h][:V, tok:tok + V] = eye_v
    o[:, h][out:out + V, :V] = eye_v
    return model


@pytest.fixture(scope="session")
def planted():
    return build_planted()


def train_one_layer(vary_segment: bool):
    """1-layer attention-only model trained 80 steps on repeated tokens: it can copy tokens
    it has seen but cannot prefix-match (no earlier layer writes previous-token information).
    With one fixed segment length it learns a positional shortcut instead (attend to
    i - seg_len + 1), an induction pattern in all but name that reaches ~0 loss at that length
    only; with a varying length it learns to copy seen tokens."""
    from interp.data.synthetic import repeated_tokens
    from interp.heads.validate import repeated_half_loss

    spec = NativeSpec(n_layers=1, d_model=64, n_heads=4, d_head=16, n_ctx=32, d_vocab=V,
                      attn_only=True, normalization="LN", positional="standard", seed=1)
    model = build_native(spec, None)
    opt = torch.optim.Adam(model.bridge.original_model.parameters(), lr=1e-2)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: threads only add overhead (10x on a busy machine)
    try:
        for step in range(80):
            tokens = repeated_tokens(model, 32, 4 + step % 11 if vary_segment else 10, seed=step)
            loss = repeated_half_loss(model.bridge.original_model(tokens), tokens).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    model.bridge.eval()
    return model


@pytest.fixture(scope="session")
def one_layer_copier():
    return train_one_layer(vary_segment=True)


@pytest.fixture(scope="session")
def one_layer_shortcut():
    return train_one_layer(vary_segment=False)
