"""Path patching on a model placed layer-wise by transformers' device_map (accelerate's dispatch)
gives the single-device numbers. On a CPU-only machine the map can only name "cpu" (a
dispatched model, one device); with two GPUs the layers are split between them."""

from __future__ import annotations

import pytest
import torch
from circuit_helpers import scrambled

from interp.circuits.path import Receivers, path_patch

SPLITS = {
    "cpu": ("cpu", "cpu"),
    "two-gpus": ("cuda:0", "cuda:1"),
}


def _placed(folder, first: str, second: str):
    """The tiny Llama with embedding and layer 0 on `first`, layer 1, final norm and unembedding on
    `second`, booted by the bridge as it was placed."""
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from interp.models.load import Model

    device_map = {"model.embed_tokens": first, "model.rotary_emb": first, "model.layers.0": first,
                  "model.layers.1": second, "model.norm": second, "lm_head": second}  # fmt: skip
    hf = AutoModelForCausalLM.from_pretrained(str(folder), device_map=device_map, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(str(folder))
    bridge = TransformerBridge.boot_transformers(str(folder), hf_model=hf, tokenizer=tok)
    bridge.eval()
    return Model.from_bridge(bridge, bridge.tokenizer, "tiny-llama-placed", "local-hf", str(folder))


@pytest.mark.parametrize("split", list(SPLITS))
def test_placed_model_patches_as_one_device(split, tiny_llama_dir, tiny_llama):
    first, second = SPLITS[split]
    if split == "two-gpus" and torch.cuda.device_count() < 2:
        pytest.skip("needs two CUDA devices")
    placed = _placed(tiny_llama_dir, first, second)
    devices = {str(next(placed.bridge.blocks[layer].parameters()).device) for layer in range(2)}
    assert devices == {first, second}
    ds = scrambled(tiny_llama, 4, seed=2)
    for receivers in (None, Receivers([(0, 1), (1, 3)], "qkv", "S2")):
        one = path_patch(tiny_llama, ds, receivers=receivers, chunk=3)
        got = path_patch(placed, ds, receivers=receivers, chunk=3)
        assert got.patched.device.type == "cpu"
        assert float((got.patched - one.patched).abs().max()) < 1e-5
        assert float((got.patched - got.clean).abs().max()) > 1e-4  # something was patched
