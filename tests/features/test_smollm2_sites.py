"""On the real SmolLM2 (slow): a transcoder's site is exactly what the MLP reads and writes, checked
against plain transformers' own modules."""

from __future__ import annotations

import pytest
import torch

from interp.features.activations import capture_sites
from interp.features.sites import get_site


@pytest.mark.slow
def test_mlp_site_is_the_mlps_own_input_and_output(smollm2):
    from pathlib import Path

    from transformers import AutoModelForCausalLM

    from interp.models.cache import cache_dir

    tokens = smollm2.to_tokens("The quick brown fox jumps over the lazy dog.")
    x, y = capture_sites(smollm2, tokens, get_site("mlp"), [3, 17])
    folder = sorted((cache_dir() / "gguf").glob("SmolLM2*/config.json"), key=lambda p: p.stat().st_mtime)[-1].parent
    hf = AutoModelForCausalLM.from_pretrained(str(Path(folder)), attn_implementation="eager").eval()
    seen = {}

    def keep(layer):
        def hook(module, inputs, output):
            seen[layer] = (inputs[0].detach(), output.detach())

        return hook

    handles = [hf.model.layers[la].mlp.register_forward_hook(keep(la)) for la in (3, 17)]
    try:
        with torch.no_grad():
            hf(tokens)
    finally:
        for h in handles:
            h.remove()
    for i, layer in enumerate((3, 17)):
        assert torch.allclose(x[i], seen[layer][0][0], atol=1e-4)
        assert torch.allclose(y[i], seen[layer][1][0], atol=1e-4)
