"""Discovery's two admission options of 2026-12-08 against plain references: heads named by their
attention admitted at the floor at the logits step, and paths to several receivers measured through
each receiver alone as well as through all at once (`DiscoveryConfig.paths = "each"`)."""

from __future__ import annotations

import pytest
import torch
from circuit_helpers import scrambled

from interp.circuits.discover import DiscoveryConfig, DiscoverySteps, admitted, strongest
from interp.circuits.path import Receivers
from interp.circuits.path_reference import path_patch_reference
from interp.errors import WorkbenchError


def test_heads_marked_at_floor_need_only_the_floor():
    e = torch.tensor([[-0.80, 0.03, 0.004], [-0.02, 0.01, float("nan")]])
    cfg = DiscoveryConfig(threshold=0.05, floor=0.005)  # the share's cut: 0.04
    assert admitted(e, cfg, set()) == [(0, 0)]
    marked = torch.tensor([[False, True, True], [False, True, True]])
    # marked heads join at |e| >= 0.005; 0.004 stays out, unmarked 1.0 (0.02) stays out, NaN never joins
    assert admitted(e, cfg, set(), marked) == [(0, 0), (0, 1), (1, 1)]
    assert admitted(e, cfg, {(0, 1)}, marked) == [(0, 0), (1, 1)]


def test_strongest_keeps_the_sign_of_the_largest_magnitude():
    a = torch.tensor([[0.10, -0.02, float("nan"), float("nan")]])
    b = torch.tensor([[-0.30, 0.01, 0.05, float("nan")]])
    c = torch.tensor([[0.20, -0.04, float("nan"), float("nan")]])
    got = strongest([a, b, c])
    assert torch.allclose(got[:, :3], torch.tensor([[-0.30, -0.04, 0.05]]))
    assert bool(got[0, 3].isnan())  # no grid patched that head


def test_unknown_paths_refused():
    with pytest.raises(WorkbenchError, match="joint, each"):
        DiscoveryConfig(paths="both")


@pytest.mark.parametrize("components,position,seed", [("kv", "S2", 1), ("q", "END", 3)])
def test_each_receiver_alone_against_the_reference(sharp, components, position, seed):
    """With paths "each", a step's effect per sender is the strongest of its path-patching effects to
    all receivers at once and to each receiver alone, each computed here by the plain reference."""
    model = sharp("tiny_llama")
    ds = scrambled(model, 4, seed=seed)
    receivers = Receivers([(1, 0), (1, 3)], components, position)
    steps = DiscoverySteps(model, ds, DiscoveryConfig(paths="each"), None)
    got = steps.patch(2, "test", receivers)
    grids = []
    for heads in (receivers.heads, [(1, 0)], [(1, 3)]):
        ref = path_patch_reference(model, ds, senders=[(0, h) for h in range(4)],
                                   receivers=Receivers(heads, components, position))  # fmt: skip
        grids.append(ref.grid(2, 4))
    want = strongest(grids)
    assert bool(got[1].isnan().all())  # nothing below layer 1's receivers lives in layer 1
    assert torch.allclose(got[0], want[0], atol=1e-4)
    joint = grids[0][0]
    # not vacuous: each receiver alone moves some sender's effect beyond the joint one
    assert float((want[0].abs() - joint.abs()).max()) > 1e-3
    one = DiscoverySteps(model, ds, DiscoveryConfig(), None).patch(2, "test", receivers)
    assert torch.allclose(one[0], joint, atol=1e-4)  # "joint" (the default) is the all-at-once effect


def test_the_printed_rule_names_the_options():
    assert DiscoveryConfig().rule() == ("threshold 0.05 of each step's largest effect, floor 0.005 of the IOI gap; "
                                        "direct heads named by attention at the floor")  # fmt: skip
    text = DiscoveryConfig(threshold=None, floor=0.01, named_at_floor=False, paths="each").rule()
    assert text == "no share, floor 0.01 of the IOI gap; receivers also one at a time"
