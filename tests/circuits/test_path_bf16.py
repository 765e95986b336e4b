"""Fast path patching in bfloat16, held against the reference run in bfloat16 and in float32 on
the same (bf16-rounded) weights, so that only the arithmetic differs.

What bf16 cannot give: the clean run itself (the cache every patched value starts from) is a bf16
forward pass, off the float32 one by its own rounding; the bf16 reference carries the same error.
What the fast path must give: the *effect* of each sender (patched - clean) within 2% of the
largest effect of the float32 reference, and patched values no farther from the float32 reference
than the bf16 clean run is, plus that 2%."""

from __future__ import annotations

import pytest
import torch
from circuit_helpers import scrambled

from interp.circuits.path import Receivers, path_patch
from interp.circuits.path_reference import path_patch_reference
from interp.circuits.replay import Replay
from interp.errors import WorkbenchError

TOLERANCE = 0.02  # of the largest |effect| of the float32 reference


def _max(x: torch.Tensor) -> float:
    return float(x.abs().max())


@pytest.mark.parametrize(
    "receivers", [None, Receivers([(0, 1), (1, 3)], "qkv", None)], ids=["logits", "qkv@every"]
)  # fmt: skip
def test_bf16_fast_within_tolerance_of_float32_reference(pair, receivers):
    m16, m32 = pair
    assert m16.dtype == torch.bfloat16 and m32.dtype == torch.float32
    ds16, ds32 = scrambled(m16, 4, seed=2), scrambled(m32, 4, seed=2)
    assert torch.equal(ds16.clean, ds32.clean)
    fast = path_patch(m16, ds16, receivers=receivers, chunk=5)  # runs check_null in bf16 for receivers
    ref16 = path_patch_reference(m16, ds16, receivers=receivers)
    ref32 = path_patch_reference(m32, ds32, receivers=receivers)
    effect32 = ref32.patched - ref32.clean
    scale = _max(effect32)
    assert scale > 0.01  # effects well above bf16's rounding of the logits (~1e-3 here)
    # (b) against float32: each sender's effect within the tolerance ...
    assert _max((fast.patched - fast.clean) - effect32) <= TOLERANCE * scale
    # ... and patched values off by no more than the bf16 clean run is, plus the tolerance
    clean_err = _max(fast.clean - ref32.clean)
    assert _max(fast.patched - ref32.patched) <= clean_err + TOLERANCE * scale
    # (a) against the bf16 reference, whose effects carry bf16's rounding of every run: the two agree
    # to within that rounding (the bf16 reference's own distance from float32) plus the tolerance
    effect16 = ref16.patched.float() - ref16.clean.float()
    ref16_err = _max(effect16 - effect32)
    assert _max((fast.patched - fast.clean) - effect16) <= ref16_err + TOLERANCE * scale
    assert torch.allclose(fast.clean, ref16.clean.float())  # the same bf16 clean run


def _null_check(model, scale: float = 1.0):
    from interp.data.task import resid_metric
    from interp.circuits.path import PatchCaches, check_null

    task = scrambled(model, 6, seed=1)
    rp = Replay.of(model)
    rp.scale *= scale
    P = task.position("S2")[:, None]
    check_null(rp, PatchCaches.collect(model, task), [(0, 1), (1, 3)], "qkv", False, P, task.end,
               resid_metric(model.bridge, task))  # fmt: skip


def test_bf16_check_null(tiny_llama_dir, pair):
    """The replay with nothing patched gives back the clean run in bf16 (on these prompts the plain
    tiny Llama was off by 0.002 in the logit difference when the replay summed in bf16, and was
    refused); a replay that gets the attention wrong (scores scaled 2x) is refused, in bf16 and
    in float32."""
    from interp import load

    _null_check(load(str(tiny_llama_dir), device="cpu", dtype="bfloat16"))
    for model in pair:
        _null_check(model)
        with pytest.raises(WorkbenchError, match="cannot replay"):
            _null_check(model, scale=2.0)
