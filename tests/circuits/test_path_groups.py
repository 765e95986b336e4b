"""Path patching in groups of prompts of similar window widths (interp.circuits.path.width_groups): the
same results as one padded batch and as the plain reference, and groups only where they save padding."""

from __future__ import annotations

import pytest
import torch

from interp.circuits.path import PatchCaches, Receivers, path_patch, width_groups
from interp.circuits.path_reference import path_patch_reference
from interp.data.ioi import make_ioi


@pytest.mark.parametrize("receivers", [Receivers([(1, 3), (1, 0)], "k", "S1+1"), Receivers([(1, 0)], "kv", "S2")],
                         ids=["k@S1+1", "kv@S2"])  # fmt: skip
def test_grouped_equals_one_batch_and_the_reference(receivers, sharp):
    model = sharp("tiny_llama")
    ds = make_ioi(model, 24, seed=5, part="evaluation")  # templates of several lengths
    groups = width_groups(ds, receivers.position)
    assert groups is not None and len(groups) >= 2, "these prompts' windows differ enough to group"
    assert sorted(torch.cat(groups).tolist()) == list(range(len(ds)))
    cache = PatchCaches.collect(model, ds)
    grouped = path_patch(model, ds, receivers=receivers, chunk=5, caches=cache)
    single = path_patch(model, ds, receivers=receivers, chunk=5, caches=cache, grouped=False)
    assert torch.allclose(grouped.patched, single.patched, atol=1e-5)
    assert torch.equal(grouped.clean, single.clean) and torch.equal(grouped.corrupted, single.corrupted)
    senders = [(0, 0), (0, 3)]
    ref = path_patch_reference(model, ds, senders, receivers)
    fast = path_patch(model, ds, senders, receivers, caches=cache)
    assert torch.allclose(fast.patched, ref.patched, atol=1e-4)
    assert float((fast.patched - fast.clean).abs().max()) > 1e-4  # the senders' paths do something


def test_groups_only_where_they_save_padding(tiny_llama):
    ds = make_ioi(tiny_llama, 24, seed=5, part="evaluation")
    assert width_groups(ds.subset([0] * 20), "S2") is None  # every window as wide: nothing to save
    assert width_groups(ds, None) is None  # every position patched: the window is the whole prompt
    assert width_groups(ds.subset(range(10)), "S1+1") is None  # too few prompts for two groups of 8
