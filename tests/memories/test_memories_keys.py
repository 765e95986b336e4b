"""Keys: the streaming top-k equals a brute-force top-k over every activation."""

from __future__ import annotations

import torch

from interp.memories import build_index, merge_topk
from interp.memories.keys import KeyCollector, coefficient_hook, empty_topk


def test_merge_topk_matches_topk_over_everything():
    gen = torch.Generator().manual_seed(0)
    coef = torch.randn(300, 12, generator=gen)
    valid = torch.rand(300, generator=gen) > 0.2
    top, ref = empty_topk(7, 12)
    positive = torch.zeros(12, dtype=torch.long)
    for lo in range(0, 300, 37):  # uneven batches, the first smaller than k is fine too
        top, ref, pos = merge_topk(
            top, ref, coef[lo : lo + 37], torch.arange(lo, min(lo + 37, 300)), valid[lo : lo + 37]
        )
        positive += pos
    want = coef.masked_fill(~valid[:, None], float("-inf")).topk(7, dim=0)
    assert torch.equal(top, want.values)
    assert torch.equal(ref, want.indices)
    assert torch.equal(positive, ((coef > 0) & valid[:, None]).sum(0))


def test_unfilled_slots_stay_empty():
    top, ref = empty_topk(5, 3)
    top, ref, _ = merge_topk(top, ref, torch.ones(2, 3), torch.tensor([10, 11]), torch.tensor([True, False]))
    assert ref[:, 0].tolist() == [10, -1, -1, -1, -1]
    assert torch.isinf(top[1:]).all()


def test_streaming_index_equals_brute_force(tiny_gpt2, tmp_path):
    """Index a small corpus in several shards and batches; then run the same windows through the
    model, keep every activation, and take one top-k: same coefficients, same positions."""
    model = tiny_gpt2
    k, seq, bs = 6, 32, 4
    index = build_index(model, "kjv", [0, 1], 700, tmp_path / "idx", top_k=k, batch_size=bs, seq_len=seq,
                        shard_tokens=256)  # fmt: skip
    windows = index.windows
    assert int((windows[:, 1:] >= 0).sum()) == 700 == index.n_tokens
    names = [coefficient_hook(layer) for layer in (0, 1)]
    acts = {n: [] for n in names}
    with torch.no_grad():
        for lo in range(0, len(windows), bs):
            batch = windows[lo : lo + bs].long()
            _, cache = model.run_with_cache(batch.clamp(min=0), names_filter=lambda n: n in names)
            for n in names:
                acts[n].append(cache[n].reshape(-1, cache[n].shape[-1]))
    valid = windows >= 0
    valid[:, 0] = False  # BOS
    for layer, n in zip((0, 1), names):
        every = torch.cat(acts[n]).masked_fill(~valid.flatten()[:, None], float("-inf"))
        want = every.topk(k, dim=0)
        got = index.keys(layer)
        torch.testing.assert_close(got["coef"], want.values.T)
        # positions may differ only among exact ties (e.g. the same token right after BOS), so
        # check that each returned position really has the returned coefficient, without repeats
        at_ref = every.gather(0, got["ref"].T)
        torch.testing.assert_close(at_ref, want.values)
        assert all(len(set(row)) == k for row in got["ref"].tolist())
        agree = (got["ref"] == want.indices.T).float().mean()
        assert agree > 0.9
        assert torch.equal(got["active"], ((every > 0) & valid.flatten()[:, None]).sum(0))
    # the early stop after the last indexed layer leaves the model usable and unchanged
    tokens = model.to_tokens("In the beginning")
    assert torch.isfinite(model(tokens)).all()


def test_collector_counts_positions():
    c = KeyCollector([0], d_mlp=4, k=2)
    c.set_batch(torch.arange(6), torch.tensor([False, True, True, True, False, True]))
    c.observe(0, torch.tensor([[[1.0, -1, 0, 2]] * 3, [[-1.0, 1, 0, 3]] * 3]))
    assert c.n_positions == 4
    assert c.state[0].active.tolist() == [2, 2, 0, 4]
