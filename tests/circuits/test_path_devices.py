"""Path patching on a model placed layer-wise by interp.load's device_map (accelerate's dispatch)
gives the single-device numbers. On a CPU-only machine the map can only name "cpu" (a dispatched
model on one device); naming two GPUs in SPLITS is the multi-GPU check, for a machine that has them."""

from __future__ import annotations

import pytest
from circuit_helpers import scrambled

from interp.circuits.path import Receivers, path_patch

SPLITS = {
    "cpu": ("cpu", "cpu"),  # a split over two GPUs needs a machine CI does not have (see issue 17)
}


def _placed(folder, first: str, second: str):
    """The tiny Llama with embedding and layer 0 on `first`, layer 1, final norm and unembedding on
    `second`, through interp.load's device_map (the bridge keeps the placement)."""
    from interp import load

    device_map = {"model.embed_tokens": first, "model.rotary_emb": first, "model.layers.0": first,
                  "model.layers.1": second, "model.norm": second, "lm_head": second}  # fmt: skip
    model = load(str(folder), dtype="float32", device_map=device_map)
    if first != second:  # transformers records a map only when it dispatches over several devices
        assert model.bridge.original_model.hf_device_map["model.layers.1"] == second
    return model


@pytest.mark.parametrize("split", list(SPLITS))
def test_placed_model_patches_as_one_device(split, tiny_llama_dir, tiny_llama):
    """Also the logits: the placed model is the same model."""
    first, second = SPLITS[split]
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
