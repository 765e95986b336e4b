"""Fast path patching against the plainly written reference, and its two sanity anchors."""

from __future__ import annotations

import pytest
import torch
from circuit_helpers import logit_diff
from circuit_helpers import scrambled as _scrambled

from interp.circuits.activation import patch_head_set
from interp.circuits.path import Receivers, all_heads, path_patch
from interp.circuits.path_reference import path_patch_reference
from interp.data.ioi import make_ioi
from interp.errors import WorkbenchError

RECEIVERS = [
    None,  # the logits
    Receivers([(1, 1), (1, 2)], "q", "END"),
    Receivers([(1, 0)], "kv", "S2"),
    Receivers([(1, 3), (1, 0)], "k", "S1+1"),  # heads 3 and 0 sit on different KV heads of the GQA model
    Receivers([(1, 2), (1, 3)], "v", "S2"),  # two query heads sharing one KV head
    Receivers([(0, 1), (1, 3)], "qkv", None),  # receivers in two layers, every position
]


CASES = [("tiny_llama", r) for r in RECEIVERS] + [("tiny_gpt2", RECEIVERS[0]), ("tiny_gpt2", RECEIVERS[-1])]


@pytest.mark.parametrize(
    ("fixture", "receivers"), CASES,
    ids=[f"{f}-" + ("logits" if r is None else f"{r.components}@{r.position}") for f, r in CASES],
)  # fmt: skip
def test_fast_equals_reference(fixture, receivers, sharp):
    model = sharp(fixture)
    ds = _scrambled(model, 4, seed=2)
    fast = path_patch(model, ds, receivers=receivers, chunk=3)  # chunks smaller than the sender list
    ref = path_patch_reference(model, ds, receivers=receivers)
    assert fast.senders == ref.senders == all_heads(model)
    assert torch.allclose(fast.clean, ref.clean, atol=1e-5)
    err = float((fast.patched - ref.patched).abs().max())
    effect = float((ref.patched - ref.clean).abs().max())
    assert err < 1e-4
    # not vacuous: some sender moves the logit diff by far more than the two disagree
    assert effect > 2e-4 and err <= 1e-3 * effect


def test_clean_into_clean_changes_nothing(tiny_llama):
    ds = make_ioi(tiny_llama, 5, seed=4)
    ds.corrupted = ds.clean.clone()
    for receivers in (None, Receivers([(1, 0), (1, 3)], "qkv", None)):
        res = path_patch(tiny_llama, ds, receivers=receivers)
        assert float((res.patched - res.clean).abs().max()) < 1e-5


@pytest.mark.parametrize("fixture", ["tiny_llama", "tiny_gpt2"])
def test_patching_every_head_reproduces_corrupted(fixture, request):
    """END holds the same token in both runs, so once every head's output comes from the
    corrupted run, END's residual stream (and its MLPs) are exactly the corrupted ones."""
    model = request.getfixturevalue(fixture)
    ds = make_ioi(model, 5, seed=5)
    clean = patch_head_set(model, ds, [])
    assert torch.allclose(clean, logit_diff(model(ds.clean), ds), atol=1e-5)
    everything = patch_head_set(model, ds, all_heads(model))
    assert torch.allclose(everything, logit_diff(model(ds.corrupted), ds), atol=1e-4)
    assert float((everything - clean).abs().max()) > 1e-3


def test_bad_heads(tiny_llama):
    ds = make_ioi(tiny_llama, 3, seed=0)
    with pytest.raises(WorkbenchError, match="outside the model"):
        path_patch(tiny_llama, ds, senders=[(5, 0)])
    with pytest.raises(WorkbenchError, match="qkv"):
        Receivers([(1, 0)], "x")


def test_receivers_below_a_chunk_of_senders(tmp_path):
    """A chunk whose senders all sit above the lowest receiver layer used to leave that layer out
    of step 1 (KeyError: `interp ioi --n-prompts 2` on SmolLM2). Receivers in layers 0 and 2 of a
    3-layer GQA model, one sender per chunk: every chunk must match the reference."""
    from interp.models.inhouse import NativeSpec, build_native
    from interp.models.tokenizers import gpt2_tokenizer

    tok = gpt2_tokenizer()
    spec = NativeSpec(n_layers=3, d_model=32, n_heads=4, n_kv_heads=2, d_head=8, d_mlp=64, n_ctx=64,
                      d_vocab=len(tok), normalization="RMS", gated_mlp=True, act_fn="silu")
    model = build_native(spec, tok)
    ds = _scrambled(model, 3, seed=7)
    receivers = Receivers([(0, 1), (2, 3)], "qkv", "S2")
    senders = [(1, 0), (1, 2), (0, 3)]
    fast = path_patch(model, ds, senders=senders, receivers=receivers, chunk=1)
    ref = path_patch_reference(model, ds, senders=senders, receivers=receivers)
    assert float((fast.patched - ref.patched).abs().max()) < 1e-4


def test_any_task(tiny_llama, sharp):
    """path_patch and its reference take any Task: IOI's logit difference is the difference of its two
    logit tasks (one metric, read the same way), other metrics (the answer's logit) agree fast vs
    reference, and a task without the receivers' position is refused."""
    from dataclasses import replace

    from interp.data.tasks import load_task

    model = sharp("tiny_llama")
    ds = _scrambled(model, 3, seed=2)
    at = Receivers([(1, 1)], "q", "END")
    diff = path_patch(model, ds, receivers=at)
    io = path_patch(model, ds.with_metric("logit"), receivers=at)
    s = path_patch(model, replace(ds, answers=ds.distractors, distractors=None, metric="logit"), receivers=at)
    assert torch.allclose(diff.patched, io.patched - s.patched, atol=1e-5)
    assert float((diff.patched - diff.clean).abs().max()) > 1e-4
    for receivers, metric in ((None, "logit"), (Receivers([(1, 0), (1, 3)], "kv", "END"), "logit")):
        t = ds.with_metric(metric)
        fast, ref = path_patch(model, t, receivers=receivers), path_patch_reference(model, t, receivers=receivers)
        assert torch.allclose(fast.clean, ref.clean, atol=1e-6)
        effect = float((ref.patched - ref.clean).abs().max())
        assert effect > 1e-5 and float((fast.patched - ref.patched).abs().max()) <= 1e-3 * effect + 1e-7
    with pytest.raises(WorkbenchError, match="no position 'S2'"):
        path_patch(model, load_task("induction", model, 2, 1).score, receivers=Receivers([(1, 0)], "q", "S2"))
