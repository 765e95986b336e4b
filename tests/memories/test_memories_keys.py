"""Keys: the streaming top-k equals a brute-force top-k over every activation."""

from __future__ import annotations

import torch

from interp.memories import IndexSettings, build_index, merge_topk
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
    settings = IndexSettings(layers=[0, 1], n_tokens=700, top_k=k, seq_len=seq, shard_tokens=256)
    index = build_index(model, settings, tmp_path / "idx", batch_size=bs)
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


def test_stacked_merge_equals_one_merge_per_layer():
    gen = torch.Generator().manual_seed(1)
    layers, k, n = 3, 4, 6
    top = torch.randn(layers, k, n, generator=gen).sort(dim=1, descending=True).values
    ref = torch.randint(0, 50, (layers, k, n), generator=gen)
    coef = torch.randn(layers, 9, n, generator=gen)
    refs, valid = torch.arange(100, 109), torch.rand(9, generator=gen) > 0.3
    stacked = merge_topk(top, ref, coef.clone(), refs, valid)
    for layer in range(layers):
        one = merge_topk(top[layer], ref[layer], coef[layer].clone(), refs, valid)
        for a, b in zip(stacked, one):
            assert torch.equal(a[layer], b)


def test_stacked_collector_equals_the_per_layer_one():
    """Deferred (stacked) merging, with early flushes past the memory cap, keeps the same state."""
    gen = torch.Generator().manual_seed(2)
    layers, d_mlp = [0, 2, 3], 8
    plain = KeyCollector(layers, d_mlp, k=3, stacked=False)
    stacked = KeyCollector(layers, d_mlp, k=3, stacked=True)
    capped = KeyCollector(layers, d_mlp, k=3, stacked=True, max_pending_bytes=100)  # flushes every layer
    for batch in range(4):
        refs = torch.arange(batch * 10, batch * 10 + 10)
        valid = torch.rand(10, generator=gen) > 0.2
        acts = {layer: torch.randn(2, 5, d_mlp, generator=gen) for layer in layers}
        for c in (plain, stacked, capped):
            c.set_batch(refs, valid)
            for layer in layers:
                c.observe(layer, acts[layer].clone())
        assert stacked._pending and not plain._pending  # merged only at flush / the next batch
    stacked.flush()
    want = plain.state_dict()
    for c in (stacked, capped):
        got = c.state_dict()
        assert got.keys() == want.keys()
        for key in want:
            assert torch.equal(got[key], want[key]), key


def test_stream_keys_gives_the_same_index_with_stacked_merges(tiny_gpt2):
    from interp.memories.build import stream_keys

    assert not KeyCollector([0], 4, 2).stacked  # per-layer merges by default off CUDA
    table = torch.randint(0, 200, (5, 16), generator=torch.Generator().manual_seed(3), dtype=torch.int32)
    table[4, 10:] = -1  # a short last window
    layers = list(range(tiny_gpt2.info.n_layers))
    states = []
    for stacked in (False, True):
        c = KeyCollector(layers, tiny_gpt2.info.d_mlp, k=4, device=tiny_gpt2.device, stacked=stacked)
        stream_keys(tiny_gpt2, c, table, 0, batch_size=2, has_bos=False)
        assert not c._pending
        states.append(c.state_dict())
    for key in states[0]:
        assert torch.allclose(states[0][key].float(), states[1][key].float()), key
