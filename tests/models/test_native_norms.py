"""The replay and the readouts call `interp.bridge.fast_norm(norm)` instead of the bridge's wrapper: the
wrapped module itself where the bridge returns its output (RMSNorm bridges, SmolLM2), the wrapper elsewhere;
either way the wrapper's output bit for bit, on every kind of model we load."""

from __future__ import annotations

import pytest
import torch

from interp.bridge import fast_norm


def _inhouse():
    from interp.models.inhouse import NativeSpec, build_native
    from interp.models.tokenizers import gpt2_tokenizer

    tok = gpt2_tokenizer()
    spec = NativeSpec(n_layers=2, d_model=32, n_heads=4, n_kv_heads=2, d_head=8, d_mlp=64, n_ctx=64, d_vocab=len(tok),
                      normalization="RMS", positional="rotary", seed=3)  # fmt: skip
    return build_native(spec, tok)


@pytest.mark.parametrize("which", ["tiny_gpt2", "tiny_llama", "smollm2", "inhouse"])
def test_unwrapped_norms_equal_the_bridge(which, request):
    model = _inhouse() if which == "inhouse" else request.getfixturevalue(which)
    b = model.bridge
    gen = torch.Generator().manual_seed(0)
    x = (torch.randn(3, 2, 5, model.info.d_model, generator=gen) * 7).to(model.dtype)
    norms = [blk.ln1 for blk in b.blocks] + [blk.ln2 for blk in b.blocks if hasattr(blk, "ln2")] + [b.ln_final]
    assert len(norms) >= 3
    for norm in norms:
        fast = fast_norm(norm)
        assert torch.equal(fast(x), norm(x))
        if which in ("tiny_llama", "smollm2"):
            assert fast is norm.original_component  # the HF module itself is called
