"""MIB's graph (interp.circuits.ungroup): the ungrouped copy computes the same function, has q, k and
v inputs per query head, and its gradient scores add up to ours over each KV group."""

from __future__ import annotations

import pytest
import torch
from circuit_helpers import scrambled_task

from interp.circuits.methods import score_edges
from interp.circuits.types import Graph
from interp.circuits.ungroup import check_graph, repeat_kv_rows, ungrouped
from interp.errors import WorkbenchError


def test_repeat_kv_rows_gives_each_query_head_its_groups_block():
    w = torch.arange(2 * 3 * 4, dtype=torch.float32).reshape(2 * 3, 4)  # 2 KV heads of width 3
    out = repeat_kv_rows(w, n_kv=2, group=2)
    assert out.shape == (12, 4)
    for h in range(4):
        assert torch.equal(out[3 * h : 3 * h + 3], w[3 * (h // 2) : 3 * (h // 2) + 3])


def test_ungrouped_llama_keeps_the_logits_and_has_mibs_graph(tiny_llama):
    assert tiny_llama.info.n_kv_heads < tiny_llama.info.n_heads
    u = ungrouped(tiny_llama)
    assert u.info.n_kv_heads == u.info.n_heads == tiny_llama.info.n_heads
    tokens = torch.randint(0, tiny_llama.info.d_vocab, (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(u(tokens), tiny_llama(tokens), rtol=0, atol=1e-5)
    g, m = Graph.of(tiny_llama), Graph.of(u)
    L, H, kv = g.n_layers, g.n_heads, g.n_kv
    assert len(m.readers) == L * (3 * H + 1) + 1 and len(g.readers) == L * (H + 2 * kv + 1) + 1
    assert m.n_edges > g.n_edges
    assert ungrouped(tiny_llama) is u  # kept while the weights are untouched


def test_a_model_without_grouped_queries_is_its_own_mib_graph(tiny_gpt2):
    assert ungrouped(tiny_gpt2) is tiny_gpt2


def test_eap_on_mibs_graph_sums_to_ours_over_each_group(tiny_llama, sharp):
    """EAP is linear in the gradient at each input: an edge into a KV head's k (or v) input on our graph
    scores what the same edge into its query heads' k (v) inputs scores on MIB's, summed; every other
    edge scores the same on both."""
    model = sharp("tiny_llama")
    u = ungrouped(model)  # made after sharpening: the copy carries the sharpened queries
    task = scrambled_task(model, 4, seed=3)
    ours, mib = score_edges(model, task, "eap"), score_edges(u, task, "eap")
    g, m = ours.graph, mib.graph
    index = {(m.writers[int(s)], m.readers[int(d)]): i for i, (s, d) in enumerate(zip(m.src, m.dst))}
    for i, (s, d) in enumerate(zip(g.src, g.dst)):
        w, r = g.writers[int(s)], g.readers[int(d)]
        if r.kind in ("k", "v"):
            parts = [index[(w, type(r)(r.kind, r.layer, h))] for h in g.heads_fed(r)]
        else:
            parts = [index[(w, r)]]
        torch.testing.assert_close(mib.scores[parts].sum(), ours.scores[i], rtol=1e-4, atol=1e-6)


def test_an_unknown_graph_is_refused_in_one_line():
    with pytest.raises(WorkbenchError, match="choose grouped or mib"):
        check_graph("ungrouped")
    assert check_graph("mib") == "mib"


@pytest.mark.parametrize("positional", ["standard", "rotary"])
def test_ungrouped_inhouse_model_keeps_the_logits(positional):
    from interp.models.inhouse import NativeSpec, build_native
    from interp.models.tokenizers import gpt2_tokenizer

    tok = gpt2_tokenizer()
    spec = NativeSpec(
        n_layers=2,
        d_model=32,
        n_heads=4,
        d_head=8,
        n_kv_heads=2,
        n_ctx=32,
        d_vocab=len(tok),
        normalization="RMS",
        positional=positional,
        gated_mlp=True,
        act_fn="silu",
        seed=5,
    )
    model = build_native(spec, tok, device="cpu")
    u = ungrouped(model)
    assert u.info.n_kv_heads == 4
    tokens = torch.randint(0, len(tok), (2, 12))
    with torch.no_grad():
        torch.testing.assert_close(u(tokens), model(tokens), rtol=0, atol=1e-5)
