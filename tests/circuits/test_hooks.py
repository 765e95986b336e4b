"""The bridge hooks that patching writes into really change the output when edited
(some bridge hooks fire after the fact, and editing those would silently do nothing)."""

from __future__ import annotations

import pytest
import torch

RELIED_ON = ["attn.hook_z", "attn.hook_q", "attn.hook_k", "attn.hook_v", "hook_resid_pre", "hook_attn_out"]


@pytest.mark.parametrize("fixture", ["tiny_llama", "tiny_gpt2"])
def test_edited_hooks_change_the_logits(fixture, request):
    model = request.getfixturevalue(fixture)
    tokens = model.to_tokens(["Then, Mary and John went to the store. John gave a drink to"])
    base = model(tokens)
    for name in RELIED_ON + ["hook_embed"]:
        full = name if name == "hook_embed" else f"blocks.1.{name}"
        out = model.run_with_hooks(tokens, fwd_hooks=[(full, lambda x, hook: x * 3.0 + 0.1)])
        assert not torch.allclose(out, base, atol=1e-4), f"editing {full} did not change the output"
    # and an identity edit changes nothing (the hook path itself is exact)
    same = model.run_with_hooks(tokens, fwd_hooks=[(f"blocks.1.{n}", lambda x, hook: x.clone()) for n in RELIED_ON])
    assert torch.allclose(same, base, atol=1e-5)
