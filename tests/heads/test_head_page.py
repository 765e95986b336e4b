"""A head's page (interp.heads.page): the OV top tokens, QK top pairs and ablation on a prompt, each
against its slow reference in float32 on the tiny models (GQA + RMSNorm + rotary Llama, LayerNorm +
biases GPT-2), and against what the model really computes (hooks) where the circuit is exact."""

from __future__ import annotations

import math

import pytest
import torch

from interp import hooks
from interp.errors import WorkbenchError
from interp.heads.page import (
    ablation_table,
    kv_head,
    ov_rows,
    ov_table,
    ov_top_tokens,
    ov_top_tokens_reference,
    prompt_ablation,
    prompt_ablation_reference,
    prompt_sources,
    qk_factors,
    qk_table,
    qk_token_set,
    qk_top_pairs,
    qk_top_pairs_reference,
)
from interp.lens import direction_logits

PROMPT = "When Mary and John went to the store, John gave a drink to"
IDS = [11, 262, 318, 1110, 3290, 5000, 12000, 30000, 50000, 777]


@pytest.fixture(params=["tiny_llama", "tiny_gpt2"])
def tiny(request):
    return request.getfixturevalue(request.param)


@pytest.mark.parametrize("head", [(0, 0), (0, 3), (1, 1), (1, 2)])
def test_ov_top_tokens_match_the_per_token_reference(tiny, head):
    fast, slow = ov_top_tokens(tiny, head, IDS, k=7), ov_top_tokens_reference(tiny, head, IDS, k=7)
    assert fast.top_ids.shape == (len(IDS), 7)
    assert torch.equal(fast.top_ids, slow.top_ids)
    torch.testing.assert_close(fast.top_values, slow.top_values, rtol=1e-4, atol=1e-5)
    assert torch.equal(fast.self_rank, slow.self_rank)
    assert (fast.top_values[:, :-1] >= fast.top_values[:, 1:]).all()  # best first


def test_ov_rows_are_what_a_layer0_head_writes_for_a_lone_token(tiny_llama):
    """A one-token sequence: the layer-0 head attends only to it, so its z is exactly the token's
    normed embedding through W_V of its KV head; z @ W_O read through the unembedding must be the
    OV row. Checks the GQA mapping (heads 0-1 read KV head 0, heads 2-3 KV head 1) and the ln1 fold."""
    assert [kv_head(tiny_llama, h) for h in range(4)] == [0, 0, 1, 1]
    W_O = tiny_llama.bridge.blocks[0].attn.W_O.detach()
    for t in (262, 4000):
        _, cache = tiny_llama.run_with_cache(torch.tensor([[t]]))
        z = cache[hooks.name("z", 0)][0, 0].float()  # [head d_head]
        for h in range(4):
            real = direction_logits(tiny_llama, (z[h] @ W_O[h].float())[None])[0]
            torch.testing.assert_close(ov_rows(tiny_llama, (0, h), [t])[0], real, rtol=1e-4, atol=1e-5)
    rows = ov_rows(tiny_llama, (0, 0), [262])[0], ov_rows(tiny_llama, (0, 2), [262])[0]
    assert not torch.allclose(*rows)  # other KV head, other circuit: the check above can fail


def test_planted_induction_head_copies_every_source(planted):
    """The planted L1H0 writes the token it reads into the output slot, which W_U reads x20: every
    source's top output is itself (rank 0), at logit 20; the zeroed L1H1 promotes nothing."""
    INDUCTION, UNEMBED, V = (1, 0), 20.0, 24  # tests/heads/conftest.py's planted model (not importable by name
    # when another conftest.py is collected first)
    ov = ov_top_tokens(planted, INDUCTION, range(V), k=3)
    assert torch.equal(ov.top_ids[:, 0], torch.arange(V)) and (ov.self_rank == 0).all()
    torch.testing.assert_close(ov.top_values[:, 0], torch.full((V,), UNEMBED))
    assert ov_top_tokens(planted, (1, 1), range(V)).top_values.abs().max() == 0
    rows = ov_table(planted, ov)
    assert rows[5]["source"] == "#5" and rows[5]["rank of the source itself"] == 0
    assert rows[5]["promotes most (logit)"].startswith("#5 +20.00, #") and rows[5]["promotes most (logit)"].endswith(" +0.00")


@pytest.mark.parametrize("head", [(0, 1), (1, 3)])
def test_qk_top_pairs_match_the_pairwise_reference(tiny, head):
    ids = qk_token_set(tiny, 40, seed=3, extra=IDS)
    assert len(ids) == len(set(ids.tolist())) >= 40
    fast = qk_top_pairs(tiny, head, ids, k=15, chunk=7)  # chunks of 7 queries: the running top-k merges
    slow = qk_top_pairs_reference(tiny, head, ids, k=15)
    assert fast.n_tokens == slow.n_tokens == len(ids)
    assert torch.equal(fast.query_ids, slow.query_ids) and torch.equal(fast.key_ids, slow.key_ids)
    torch.testing.assert_close(fast.scores, slow.scores, rtol=1e-4, atol=1e-6)
    whole = qk_top_pairs(tiny, head, ids, k=15, chunk=10_000)
    assert torch.equal(fast.query_ids, whole.query_ids) and torch.equal(fast.key_ids, whole.key_ids)


def test_qk_scores_are_the_attention_scores_at_distance_zero(tiny_llama):
    """Rotary ignored = a query and key at the same position (the rotation cancels): the diagonal
    of a layer-0 head's real attention scores is Q[t] . K[t] / sqrt(d_head), for every query head."""
    tokens = torch.tensor([[262, 4000, 17, 262]])
    _, cache = tiny_llama.run_with_cache(tokens)
    scores = cache[hooks.name("attn_scores", 0)][0].float()  # [head query key]
    for h in range(4):
        Q, K = qk_factors(tiny_llama, (0, h), tokens[0])
        ours = (Q * K).sum(-1) / math.sqrt(tiny_llama.info.d_head)
        torch.testing.assert_close(ours, scores[h].diagonal(), rtol=1e-4, atol=1e-5)
    Q, K = qk_factors(tiny_llama, (0, 2), tokens[0])
    off = float(Q[1] @ K[0]) / math.sqrt(tiny_llama.info.d_head)
    assert abs(off - float(scores[2, 1, 0])) > 1e-4  # off the diagonal rotary does matter


@pytest.mark.parametrize("head", [(0, 2), (1, 0)])
def test_prompt_ablation_matches_the_attn_out_reference(tiny, head):
    fast, slow = prompt_ablation(tiny, PROMPT, head), prompt_ablation_reference(tiny, PROMPT, head)
    n = tiny.to_tokens(PROMPT).shape[1]
    for mode in ("mean", "zero"):
        assert fast[mode].clean_loss.shape == (n - 1,)
        torch.testing.assert_close(fast[mode].clean_loss, slow[mode].clean_loss, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(fast[mode].ablated_loss, slow[mode].ablated_loss, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(fast[mode].ablated_probs, slow[mode].ablated_probs, rtol=1e-4, atol=1e-7)
        assert fast[mode].delta_loss.abs().max() > 1e-5  # the ablation does something here
    assert not torch.allclose(fast["mean"].ablated_loss, fast["zero"].ablated_loss)


def test_ablating_the_planted_heads_on_a_repeated_prompt(planted):
    """Zero-ablating the planted induction head loses the second copy of a repeated sequence (its
    tokens were predicted by copying); the zeroed head L1H1 changes nothing."""
    seq = torch.tensor([3, 7, 1, 12, 9, 5, 3, 7, 1, 12, 9, 5])
    induction = prompt_ablation(planted, seq, (1, 0), modes=("zero",))["zero"]
    second = induction.delta_loss[7:]  # predicting tokens 9..12 (position 0, its own previous token, blurs 8)
    assert (second > 1.0).all() and induction.clean_loss[7:].max() < 0.1
    idle = prompt_ablation(planted, seq, (1, 1))
    for a in idle.values():
        assert a.delta_loss.abs().max() < 1e-6 and a.kl < 1e-9 and a.top() == a.top(ablated=True)
    row = ablation_table(planted, {"zero": induction})[0]
    assert row["top before"] == "#3" and row["top after"] != "#3" and row["Δ loss, last token (nats)"] > 1.0


def test_page_tables_name_tokens(tiny_llama):
    sources = prompt_sources(tiny_llama, PROMPT)
    toks = tiny_llama.to_tokens(PROMPT)[0].tolist()
    assert sources.tolist() == list(dict.fromkeys(toks[1:]))  # BOS out, " John" once
    assert len(prompt_sources(tiny_llama, PROMPT, limit=3)) == 3
    rows = qk_table(tiny_llama, qk_top_pairs(tiny_llama, (1, 0), sources, k=4))
    assert len(rows) == 4 and rows[0]["score"] >= rows[-1]["score"]
    assert all(r["query token"].startswith("'") for r in rows)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda m: ov_top_tokens(m, (2, 0), [1]), "pick a layer in 0..1 and a head in 0..3"),
        (lambda m: qk_top_pairs(m, (0, 4), [1, 2]), "pick a layer in 0..1 and a head in 0..3"),
        (lambda m: ov_top_tokens(m, (0, 0), [1], k=0), "at least 1"),
        (lambda m: ov_top_tokens(m, (0, 0), []), "give at least one token"),
        (lambda m: ov_top_tokens(m, (0, 0), [60000]), "token ids must lie in 0..50256"),
        (lambda m: prompt_ablation(m, torch.tensor([5]), (0, 0)), "type a longer prompt"),
        (lambda m: prompt_ablation(m, PROMPT, (0, 0), modes=("bogus",)), "bogus"),
    ],
)
def test_bad_input_is_one_line(tiny_llama, call, message):
    with pytest.raises(WorkbenchError, match=message) as err:
        call(tiny_llama)
    assert "\n" not in str(err.value)


def test_every_heatmap_cell_is_a_clickable_point_and_a_click_reads_back():
    from interp.heads.find import HeadFinding
    from interp.viz.heads import clicked_head, score_heatmaps

    scores = {"induction": torch.arange(12.0).reshape(3, 4), "previous-token": torch.zeros(3, 4)}
    fig = score_heatmaps(scores, [HeadFinding(2, 1, "induction", 9.0)], picked=(1, 3))
    cells = [t for t in fig.data if t.name == "induction cells"]
    assert len(cells) == 1 and len(cells[0].x) == 12
    for x, y, (layer, head, score) in zip(cells[0].x, cells[0].y, cells[0].customdata):
        assert (x, y) == (head, layer) and score == float(scores["induction"][layer, head])
    assert all(t.hoverinfo == "skip" for t in fig.data if t.type == "heatmap")  # the cells carry the hover
    rings = [t for t in fig.data if t.name == "picked head"]
    assert len(rings) == 2 and all((list(t.x), list(t.y)) == ([3], [1]) for t in rings)
    assert clicked_head([{"x": 3, "y": 2, "curve_number": 1}], 3, 4) == (2, 3)
    assert clicked_head([{"x": 7, "y": 0}, {"x": 1.0, "y": 1.0}], 3, 4) == (1, 1)  # out of range skipped
    assert clicked_head([{"lasso": []}], 3, 4) is None and clicked_head([], 3, 4) is None
