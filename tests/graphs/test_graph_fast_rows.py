"""The fast adjacency rows (`attribute._rows` through `LocalReplacement.transposed`: folded norms,
position-major in-place products, rows entering at their own layer, positions after a batch's last
target left out) against the plain transpose `LocalReplacement.backward` one row at a time."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from interp.graphs.attribute import _reads, _rows, demeaned_unembed


def _errors(R, g):
    errors = R.errors.clone()
    if g.settings["zero_bos"]:
        errors[:, 0] = 0
    return errors


def slow_row(g, R, errors, node: int) -> torch.Tensor:
    """One adjacency row by `R.backward` (full positions and layers, norms applied as written)."""
    P, d = R.n_pos, R.inputs.shape[-1]
    row, final = torch.zeros(g.n_nodes), torch.zeros(1, P, d)
    if node >= g.n_features:
        final[0, P - 1] = demeaned_unembed(R, g.logit_tokens[node - g.logit_start : node - g.logit_start + 1])[0]
    fl, fp, ff = g.features.T.tolist() if g.n_features else ([], [], [])

    def inject(layer):
        if node >= g.n_features or fl[node] != layer:
            return None
        gx2 = torch.zeros(1, P, d)
        gx2[0, fp[node]] = R.transcoders.W_enc[layer][:, ff[node]].float()
        return gx2

    def read(layer, G):
        for i in range(g.n_features):
            if fl[i] == layer:
                row[i] = G[0, fp[i]] @ (R.transcoders.W_dec[layer, ff[i]].float() * g.activations[i])
        e0 = g.error_index(layer, 0)
        row[e0 : e0 + P] = (G[0] * errors[layer]).sum(-1)

    G0 = R.backward(final, inject, read)
    row[g.token_start : g.token_start + P] = (G0[0] * R.inputs).sum(-1)
    return row


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "all-positions"])
def test_fast_rows_equal_the_plain_transpose(built, causal):
    _, _, R, g = built
    errors = _errors(R, g)
    if not causal:  # the fallback for patterns that are not lower-triangular: every position, every row
        R = dataclasses.replace(R)
        R.transposed = dataclasses.replace(R.transposed, causal=False)
    fl, fp, ff = g.features.T
    reads = _reads(g, R, errors, R.transcoders.W_dec[fl, ff].float() * g.activations[:, None])
    gen = torch.Generator().manual_seed(0)
    some = torch.randperm(g.n_features, generator=gen)[:9]
    logits = torch.arange(g.logit_start, g.n_nodes)
    batches = [some, torch.cat([some[:4], logits]), logits, some[:1], some[fp[some].argsort()][:3]]
    for batch in batches:
        nodes, fast = _rows(g, R, batch, reads)
        assert sorted(nodes.tolist()) == sorted(batch.tolist())
        slow = torch.stack([slow_row(g, R, errors, int(i)) for i in nodes])
        torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-4)


def test_transposed_knows_causal_patterns(built):
    _, _, R, _ = built
    assert R.transposed.causal  # the tiny models' attention is causal
    assert R.transposed.truncated(3).shape[2] == 3


def dense_influence(rows, row_nodes, g, max_iter=1000):
    """circuit-tracer's partial influence as it reads: a walk over the whole row matrix each step."""
    a = rows.abs()
    a = a / a.sum(1, keepdim=True).clamp(min=1e-10)
    prod = torch.zeros(g.n_nodes)
    prod[g.logit_start :] = g.logit_probs
    total = torch.zeros(g.n_nodes)
    for _ in range(max_iter):
        prod = prod[row_nodes] @ a
        if not prod.any():
            return total
        total += prod
    raise AssertionError("no convergence")


def test_partial_influence_walks_the_square_part_only(built):
    from interp.graphs.attribute import partial_influence

    _, _, _, g = built
    gen = torch.Generator().manual_seed(1)
    feats = torch.randperm(g.n_features, generator=gen)[: g.n_features // 2]
    for row_nodes in (
        torch.arange(g.logit_start, g.n_nodes),
        torch.cat([torch.arange(g.logit_start, g.n_nodes), feats]),
    ):
        rows = g.adjacency[row_nodes]
        blocks = [rows[:3], rows[3:]] if len(rows) > 3 else [rows]
        want = dense_influence(rows, row_nodes, g)
        for chunk in (256, 2):
            sums = rows.abs().sum(1) if chunk == 2 else None
            got = partial_influence(blocks, row_nodes, g, sums, chunk=chunk)
            assert got[: g.n_features].abs().sum() > 0
            torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)
