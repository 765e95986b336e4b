"""Keys: the streaming top-k (dense and sparse merges, both signs) equals a brute-force top-k
over every activation."""

from __future__ import annotations

import pytest
import torch

from interp.errors import WorkbenchError
from interp.memories import IndexSettings, build_index, merge_topk, merge_topk_sparse, parse_memory
from interp.memories.collector import KeyCollector
from interp.memories.keys import coefficient_hook, empty_topk, signed


def brute_topk(coef, valid, k):
    """Top-k of the positive valid coefficients, -inf / -1 in unfilled slots."""
    masked = coef.masked_fill(~valid[:, None] | (coef <= 0), float("-inf"))
    want = masked.topk(k, dim=0)
    return want.values, torch.where(torch.isfinite(want.values), want.indices, torch.full_like(want.indices, -1))


def sparse(top, ref, coef, refs, valid, fused=False):
    return merge_topk_sparse(top, ref, coef, refs, valid, ("+", "-"), fused=fused)


def sparse_fused(top, ref, coef, refs, valid):
    return sparse(top, ref, coef, refs, valid, fused=True)


def dense(top, ref, coef, refs, valid):
    return merge_topk(top, ref, signed(coef, ("+", "-")), refs, valid)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("merge", [dense, sparse, sparse_fused])
def test_merge_topk_matches_topk_over_everything(merge, dtype):
    """Coefficients come in the model's dtype (bfloat16 too); the state is float32."""
    gen = torch.Generator().manual_seed(0)
    coef = torch.randn(300, 12, generator=gen).to(dtype)
    coef[:, 3] = -coef[:, 3].abs()  # a neuron never positive: its "+" memory has no trigger
    coef[:40, 5] = -1.0  # ... one positive only late
    valid = torch.rand(300, generator=gen) > 0.2
    top, ref = empty_topk(7, 12, n_signs=2)
    positive = torch.zeros(2, 12, dtype=torch.long)
    for lo in range(0, 300, 37):  # uneven batches, the first smaller than k is fine too
        top, ref, pos = merge(top, ref, coef[lo : lo + 37], torch.arange(lo, min(lo + 37, 300)), valid[lo : lo + 37])
        positive += pos
    for s, c in enumerate((coef.float(), -coef.float())):
        values, refs = brute_topk(c, valid, 7)
        assert torch.equal(top[s], values)
        if dtype == torch.float32:
            assert torch.equal(ref[s], refs)
        else:  # bfloat16 has many exact ties: any tied position will do, each once
            filled = ref[s] >= 0
            assert torch.equal(filled, refs >= 0)
            assert torch.equal(c.gather(0, ref[s].clamp(min=0))[filled], values[filled])
            assert all(len(set(col)) == len(col) for col in (ref[s].T[filled.T.any(-1)]).tolist() if -1 not in col)
        assert torch.equal(positive[s], ((c > 0) & valid[:, None]).sum(0))
    assert (ref[0, :, 3] == -1).all() and torch.isinf(top[0, :, 3]).all()
    assert (ref[1, :, 3] >= 0).all()


@pytest.mark.parametrize("fused", [False, True])
def test_sparse_merge_takes_its_threshold_path_and_equals_the_dense_one(fused):
    """Past the first batches only a few coefficients beat the running k-th best: the sparse
    merge then scatters them into a few rows (not the dense fallback) and gives the same state,
    activity counts included."""
    gen = torch.Generator().manual_seed(4)
    k, n = 5, 40
    want = got = empty_topk(k, n, n_signs=2)
    calls = {"dense": 0}
    from interp.memories import keys

    real = keys.merge_topk

    def counting(*a, **kw):
        calls["dense"] += 1
        return real(*a, **kw)

    for b in range(30):
        coef = torch.randn(64, n, generator=gen)
        coef[:, 0] = 0.0  # exact zeros belong to neither sign
        refs, valid = torch.arange(b * 64, b * 64 + 64), torch.rand(64, generator=gen) > 0.1
        want = dense(*want[:2], coef, refs, valid)
        keys.merge_topk = counting
        try:
            got = sparse(*got[:2], coef, refs, valid, fused)
        finally:
            keys.merge_topk = real
        for a, b_ in zip(want, got):
            assert torch.equal(a, b_)
    assert 0 < calls["dense"] <= 4  # the first batch(es) only, once per sign


def test_unfilled_slots_stay_empty():
    for merge in (dense, sparse, sparse_fused):
        top, ref = empty_topk(5, 3, n_signs=2)
        top, ref, _ = merge(top, ref, torch.ones(2, 3), torch.tensor([10, 11]), torch.tensor([True, False]))
        assert ref[0, :, 0].tolist() == [10, -1, -1, -1, -1]
        assert torch.isinf(top[0, 1:]).all()
        assert (ref[1] == -1).all() and torch.isinf(top[1]).all()  # no negative coefficient: "-" stays empty


def test_parse_memory():
    assert parse_memory("21:1298:-") == (21, 1298, "-")
    assert parse_memory(" 3:7 ") == (3, 7, "+")
    for bad, message in (("3", "bad memory"), ("a:b", "bad memory"), ("1:2:x", "unknown sign"), ("1:2:+:4", "bad memory")):
        with pytest.raises(WorkbenchError, match=message):
            parse_memory(bad)


@pytest.mark.parametrize("name, signs", [("tiny_gpt2", ("+",)), ("tiny_llama", ("+", "-"))])
def test_streaming_index_equals_brute_force(name, signs, request, tmp_path):
    """Index a small corpus in several shards and batches; then run the same windows through the
    model, keep every activation, and take one top-k per sign: same coefficients, same positions.
    A gated MLP (tiny Llama) is indexed on both signs, a GELU one (tiny GPT-2) on "+" only."""
    model = request.getfixturevalue(name)
    k, seq, bs = 6, 32, 4
    settings = IndexSettings(layers=[0, 1], n_tokens=700, top_k=k, seq_len=seq, shard_tokens=256, n_permutations=20)
    index = build_index(model, settings, tmp_path / "idx", batch_size=bs)
    assert index.signs == signs
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
        got = index.keys(layer)
        assert got["coef"].shape == (len(signs), model.info.d_mlp, k)
        for s, sign in enumerate(signs):
            memory = torch.cat(acts[n]) * (1 if sign == "+" else -1)  # the memory's coefficient, sign · c
            every = memory.masked_fill(~valid.flatten()[:, None] | (memory <= 0), float("-inf"))
            want = every.topk(k, dim=0)
            torch.testing.assert_close(got["coef"][s], want.values.T)
            # positions may differ only among exact ties (e.g. the same token right after BOS), so
            # check that each returned position really has the returned coefficient, without repeats
            at_ref = every.gather(0, got["ref"][s].T.clamp(min=0))
            torch.testing.assert_close(at_ref, want.values)
            assert all(len(set(row)) == k for row in got["ref"][s].tolist())
            agree = (got["ref"][s] == want.indices.T).float().mean()
            assert agree > 0.9
            assert torch.equal(got["active"][s], ((memory > 0) & valid.flatten()[:, None]).sum(0))
    # the early stop after the last indexed layer leaves the model usable and unchanged
    tokens = model.to_tokens("In the beginning")
    assert torch.isfinite(model(tokens)).all()


def test_collector_counts_positions():
    c = KeyCollector([0], d_mlp=4, k=2)
    c.set_batch(torch.arange(6), torch.tensor([False, True, True, True, False, True]))
    c.observe(0, torch.tensor([[[1.0, -1, 0, 2]] * 3, [[-1.0, 1, 0, 3]] * 3]))
    assert c.n_positions == 4
    assert c.state[0].active.tolist() == [[2, 2, 0, 4], [2, 2, 0, 0]]  # "+" then "-" memories


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
    plain = KeyCollector(layers, d_mlp, k=3, stacked=False, sparse=False)
    stacked = KeyCollector(layers, d_mlp, k=3, stacked=True)
    capped = KeyCollector(layers, d_mlp, k=3, stacked=True, max_pending_bytes=100)  # flushes every layer
    stacked_dense = KeyCollector(layers, d_mlp, k=3, stacked=True, sparse=False)
    per_layer = KeyCollector(layers, d_mlp, k=3, stacked=False)  # the CPU default: sparse merges
    for batch in range(4):
        refs = torch.arange(batch * 10, batch * 10 + 10)
        valid = torch.rand(10, generator=gen) > 0.2
        acts = {layer: torch.randn(2, 5, d_mlp, generator=gen) for layer in layers}
        for c in (plain, stacked, capped, per_layer, stacked_dense):
            c.set_batch(refs, valid)
            for layer in layers:
                c.observe(layer, acts[layer].clone())
        assert stacked._pending and not plain._pending  # merged only at flush / the next batch
    stacked.flush()
    want = plain.state_dict()
    for c in (stacked, capped, per_layer, stacked_dense):
        got = c.state_dict()
        assert got.keys() == want.keys()
        for key in want:
            assert torch.equal(got[key], want[key]), key


def test_lagged_collector_merges_one_batch_late_and_reads_the_same_state():
    """Lagged merging (a batch's merge runs at the next flush; on CUDA on a side stream) gives the
    plain state whenever it is read: `state`, `state_dict()` and `drain()` merge what is waiting."""
    gen = torch.Generator().manual_seed(5)
    layers, d_mlp = [0, 1], 6
    plain = KeyCollector(layers, d_mlp, k=3, stacked=False)
    lagged = KeyCollector(layers, d_mlp, k=3, stacked=True, lagged=True)
    capped = KeyCollector(layers, d_mlp, k=3, stacked=True, lagged=True, max_pending_bytes=50, fused=True)
    assert not KeyCollector(layers, d_mlp, k=3, stacked=True).lagged  # only on CUDA by default
    for batch in range(5):
        refs = torch.arange(batch * 8, batch * 8 + 8)
        valid = torch.rand(8, generator=gen) > 0.25
        acts = {layer: torch.randn(2, 4, d_mlp, generator=gen) for layer in layers}
        for c in (plain, lagged, capped):
            c.set_batch(refs, valid)
            for layer in layers:
                c.observe(layer, acts[layer].clone())
            c.flush()
        assert len(lagged._late) == 1  # this batch waits for the next flush
        if batch == 2:  # reading the state mid-way merges everything seen so far
            for layer in layers:
                assert torch.equal(lagged.state[layer].coef, plain.state[layer].coef)
            assert not lagged._late
    want = plain.state_dict()
    for c in (lagged, capped):
        got = c.state_dict()
        assert not c._late
        for key in want:
            assert torch.equal(got[key], want[key]), key


def test_stream_keys_gives_the_same_index_with_stacked_merges(tiny_gpt2):
    from interp.memories.build import stream_keys

    assert not KeyCollector([0], 4, 2).stacked  # per-layer merges by default off CUDA
    table = torch.randint(0, 200, (5, 16), generator=torch.Generator().manual_seed(3), dtype=torch.int32)
    table[4, 10:] = -1  # a short last window
    layers = list(range(tiny_gpt2.info.n_layers))
    states = []
    for stacked, sparse in ((False, True), (True, False), (False, False)):
        c = KeyCollector(layers, tiny_gpt2.info.d_mlp, k=4, device=tiny_gpt2.device, stacked=stacked, sparse=sparse)
        stream_keys(tiny_gpt2, c, table, 0, batch_size=2, has_bos=False)
        assert not c._pending
        states.append(c.state_dict())
    for other in states[1:]:
        for key in states[0]:
            assert torch.allclose(states[0][key].float(), other[key].float()), key


def test_sparse_merge_of_stacked_layers_equals_the_dense_one():
    """Layers stacked in front (the CUDA flush): one sparse call equals the dense merge."""
    gen = torch.Generator().manual_seed(5)
    layers, k, n = 3, 4, 10
    want = got = empty_topk(k, n, n_signs=2)
    want = got = (want[0].expand(layers, -1, -1, -1).clone(), want[1].expand(layers, -1, -1, -1).clone())
    for b in range(12):
        coef = torch.randn(layers, 32, n, generator=gen)
        refs, valid = torch.arange(b * 32, b * 32 + 32), torch.rand(32, generator=gen) > 0.2
        want = merge_topk(*want[:2], torch.stack([signed(c, ("+", "-")) for c in coef]), refs, valid)
        got = merge_topk_sparse(*got[:2], coef, refs, valid, ("+", "-"), fused=b % 2 == 1)  # both scans in turn
        for a, b_ in zip(want, got):
            assert torch.equal(a, b_)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("path", ["dense batch", "threshold", "mixed"])
@pytest.mark.parametrize("fused", [False, True])
def test_sparse_merge_paths_in_the_coefficients_dtype_equal_the_float32_dense_merge(path, dtype, fused):
    """Every path of the sparse merge (the whole batch dense, the threshold scatter, a few
    columns dense) with the state kept in the coefficients' dtype gives the values of the
    float32 dense merge (refs: a position that really has that value, no repeats), and the
    same activity counts; both ways of counting signs agree."""
    from interp.memories import keys

    gen = torch.Generator().manual_seed(6)
    layers, k, n, pos = 2, 4, 9, 40
    max_new = {"dense batch": 2 * k, "threshold": 10**6, "mixed": 2 * k}[path]
    want = empty_topk(k, n, n_signs=2)
    got = empty_topk(k, n, n_signs=2, dtype=dtype)
    want = tuple(t.expand(layers, -1, -1, -1).clone() for t in want)
    got = tuple(t.expand(layers, -1, -1, -1).clone() for t in got)
    calls = {"dense batch": 0}
    real = keys.dense_batch_merge

    def counting(*a):
        calls["dense batch"] += 1
        return real(*a)

    keys.dense_batch_merge = counting
    try:
        for b in range(8):
            coef = torch.randn(layers, pos, n, generator=gen).to(dtype)
            if path == "mixed" and b >= 2:
                coef[:, :, 1] = 5.0 + b + torch.arange(pos) / 64  # a burst: one memory's column dense
            refs, valid = torch.arange(b * pos, (b + 1) * pos), torch.rand(pos, generator=gen) > 0.2
            want = merge_topk(*want[:2], torch.stack([signed(c.float(), ("+", "-")) for c in coef]), refs, valid)
            got = merge_topk_sparse(*got[:2], coef, refs, valid, ("+", "-"), max_new=max_new, matvec=b % 2 == 0,
                                    fused=fused)  # fmt: skip
            assert got[0].dtype == dtype
            torch.testing.assert_close(got[0].float(), want[0], atol=0, rtol=0)
            assert torch.equal(got[2], want[2])
            assert torch.equal(got[1] >= 0, want[1] >= 0)
            for row in got[1].transpose(-1, -2).reshape(-1, k).tolist():  # one memory's k refs
                kept = [r for r in row if r >= 0]
                assert len(set(kept)) == len(kept)
            if dtype == torch.float32:  # no ties: the very same positions
                assert torch.equal(got[1], want[1])
    finally:
        keys.dense_batch_merge = real
    assert (calls["dense batch"] > 0) == (path == "dense batch" or path == "mixed")
    if path == "threshold":
        assert calls["dense batch"] == 0


def test_count_signs_both_ways_agree():
    gen = torch.Generator().manual_seed(7)
    coef = torch.randn(50, 6, generator=gen).to(torch.bfloat16)
    coef[::3] = 0
    valid = torch.rand(50, generator=gen) > 0.3
    a = keys_count(coef, valid, True)
    b = keys_count(coef, valid, False)
    assert torch.equal(a, b)
    assert a[0].tolist() == ((coef > 0) & valid[:, None]).sum(0).tolist()


def keys_count(coef, valid, matvec):
    from interp.memories.keys import count_signs

    return count_signs(coef, valid, ("+", "-"), matvec)


def test_collector_states_follow_each_layers_device():
    """A layer whose coefficients arrive on another device ('meta' here: a stand-in for a
    second device, shapes and placement only -- a CPU has no second device) gets its state
    there; the others stay put. The batch's positions are copied once per device."""
    c = KeyCollector([0, 1], d_mlp=4, k=2, stacked=False, sparse=False)
    c.set_batch(torch.arange(6), torch.ones(6, dtype=torch.bool))
    c.observe(0, torch.randn(1, 6, 4))
    c.observe(1, torch.randn(1, 6, 4, device="meta"))
    assert c.state[0].coef.device.type == "cpu" and c.state[1].coef.device.type == "meta"
    assert c.state[1].ref.device.type == c.state[1].active.device.type == "meta"
    assert {d.type for d in c._on} == {"cpu", "meta"}
    stacked = KeyCollector([0, 1], d_mlp=4, k=2, stacked=True, sparse=False)
    stacked.set_batch(torch.arange(6), torch.ones(6, dtype=torch.bool))
    stacked.observe(0, torch.randn(1, 6, 4))
    stacked.observe(1, torch.randn(1, 6, 4, device="meta"))
    stacked.flush()  # one stacked merge per device
    assert stacked.state[0].coef.device.type == "cpu" and stacked.state[1].coef.device.type == "meta"


def test_collector_keeps_its_state_in_the_given_dtype_and_reloads_it():
    c = KeyCollector([0], d_mlp=3, k=2, dtype=torch.bfloat16)
    c.set_batch(torch.arange(4), torch.ones(4, dtype=torch.bool))
    c.observe(0, torch.randn(1, 4, 3).to(torch.bfloat16))
    assert c.state[0].coef.dtype == torch.bfloat16
    saved = c.state_dict()
    again = KeyCollector([0], d_mlp=3, k=2, dtype=torch.bfloat16)
    again.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in saved.items()})
    assert again.state[0].coef.dtype == torch.bfloat16 and torch.equal(again.state[0].coef, c.state[0].coef)


@pytest.mark.parametrize("signs", [("+",), ("-",), ("+", "-")])
def test_fused_scan_equals_the_plain_one_for_every_set_of_signs(signs):
    gen = torch.Generator().manual_seed(8)
    plain = fused = tuple(t.expand(2, -1, -1, -1).clone() for t in empty_topk(3, 7, n_signs=len(signs)))
    for b in range(6):
        coef = torch.randn(2, 16, 7, generator=gen)
        refs, valid = torch.arange(b * 16, b * 16 + 16), torch.rand(16, generator=gen) > 0.3
        plain = merge_topk_sparse(*plain[:2], coef, refs, valid, signs, fused=False)
        fused = merge_topk_sparse(*fused[:2], coef, refs, valid, signs, fused=True)
        for a, b_ in zip(plain, fused):
            assert torch.equal(a, b_)
