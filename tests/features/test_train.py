"""Training: the loss against a plain per-layer reference, AuxK's effect, the learning-rate
schedule, bit-exact resumption, and bad input refused before any work."""

from __future__ import annotations

import pytest
import torch
from feature_helpers import random_dictionary

from interp.errors import WorkbenchError
from interp.features import TrainSettings, formats, train
from interp.features.loss import auxk_loss, step_loss
from interp.features.train import learning_rate


def reference_loss(d, x, y, dead, alpha):
    """Layer by layer, the plain formulas: FVU with the batch's own mean, and AuxK from the
    largest dead pre-activations over the same variance."""
    total = 0.0
    for i in range(len(d.layers)):
        one = d.rows(i, i + 1)
        y_hat = one.decode(one.activate(one.pre_acts(x[i : i + 1])), x[i : i + 1])[0]
        e = y[i] - y_hat
        var = ((y[i] - y[i].mean(0)) ** 2).sum()
        fvu = (e**2).sum() / var
        pre = one.pre_acts(x[i : i + 1])[0]
        n_dead = int(dead[i].sum())
        aux = 0.0
        if n_dead:
            k_aux = min(d.cfg.d_out // 2, n_dead)
            cand = pre[:, dead[i]]
            vals, j = cand.topk(k_aux, dim=-1)
            rows = one.W_dec[0][dead[i]]
            e_hat = torch.stack([(vals[t].relu()[:, None] * rows[j[t]]).sum(0) for t in range(len(pre))])
            aux = min(1.0, n_dead / (d.cfg.d_out // 2)) * ((e_hat - e.detach()) ** 2).sum() / var
        total = total + fvu + alpha * aux
    return total


def test_loss_and_gradients_match_reference():
    d = random_dictionary(layers=(0, 1), d_sae=48, k=4)
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(2, 20, 32, generator=gen), torch.randn(2, 20, 32, generator=gen)
    dead = torch.zeros(2, 48, dtype=torch.bool)
    dead[0, :30] = True  # more dead than k_aux = 16 on layer 0, a few on layer 1
    dead[1, 40:43] = True
    out = step_loss(d, x, y, dead, auxk_alpha=0.5)
    out.loss.backward()
    grads = {n: p.grad.clone() for n, p in d.named_parameters()}
    d.zero_grad()
    ref = reference_loss(d, x, y, dead, 0.5)
    ref.backward()
    assert torch.allclose(out.loss, ref, rtol=1e-5)
    for n, p in d.named_parameters():
        assert torch.allclose(grads[n], p.grad, atol=1e-5), n


def test_auxk_reaches_dead_latents_only_when_on():
    """Latents 10..19 are positive but never win the TopK (the others sit 50 higher): only the
    AuxK term sends them a gradient."""
    d = random_dictionary(layers=(0,), d_sae=48, k=4)
    with torch.no_grad():
        d.b_enc[0] = 50.0
        d.b_enc[0, 10:20] = 0.5
    x, y = torch.randn(1, 30, 32), torch.randn(1, 30, 32)
    dead = torch.zeros(1, 48, dtype=torch.bool)
    dead[0, 10:20] = True
    for alpha, expect in ((0.0, False), (1.0, True)):
        d.zero_grad()
        step_loss(d, x, y, dead, auxk_alpha=alpha).loss.backward()
        assert bool(d.W_dec.grad[0, 10:20].abs().sum() > 0) == expect
        assert bool(d.W_enc.grad[0][:, 10:20].abs().sum() > 0) == expect


def test_auxk_is_zero_without_dead_latents():
    d = random_dictionary(layers=(0,))
    x = torch.randn(1, 8, 32)
    pre = d.pre_acts(x)
    got = auxk_loss(d, pre, torch.randn(1, 8, 32), torch.zeros(1, 48, dtype=torch.bool), torch.ones(1))
    assert float(got.abs().sum()) == 0.0


def test_learning_rate_warms_up_and_decays_to_zero():
    s = TrainSettings(lr=1e-3, warmup_steps=10, decay_fraction=0.2)
    lrs = [learning_rate(s, i, 100) for i in range(100)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3) and lrs[50] == pytest.approx(1e-3)
    assert lrs[99] == pytest.approx(1e-3 / 20) and all(a >= b for a, b in zip(lrs[80:], lrs[81:]))


SMALL = dict(site="mlp", d_sae=64, k=4, n_tokens=6000, seq_len=32, batch_tokens=512, corpus="kjv",
             dead_tokens=1000, checkpoint_every=3, warmup_steps=2)


def test_resume_is_bit_exact(tmp_path, tiny_llama):
    s = TrainSettings(**SMALL)
    whole = train(tiny_llama, s, tmp_path / "whole")
    train(tiny_llama, s, tmp_path / "cut", max_steps=5)  # killed after step 5 (its checkpoint)
    assert (tmp_path / "cut" / "checkpoint" / "trainer.json").is_file()
    resumed = train(tiny_llama, s, tmp_path / "cut")
    for name, t in whole.tensors().items():
        assert torch.equal(t, resumed.tensors()[name]), name
    assert not (tmp_path / "cut" / "checkpoint").exists()
    meta = formats.read_meta(tmp_path / "cut")
    assert meta["training"]["tokens"] == formats.read_meta(tmp_path / "whole")["training"]["tokens"]
    again = train(tiny_llama, s, tmp_path / "whole")  # a finished run is returned, not redone
    assert torch.equal(again.W_enc, whole.W_enc)


def test_training_lowers_fvu_and_logs_progress(tmp_path, tiny_llama):
    seen = []
    s = TrainSettings(**{**SMALL, "n_tokens": 12000, "checkpoint_every": 0})
    train(tiny_llama, s, tmp_path / "d", progress=lambda done, total, msg: seen.append(msg), log_every=2)
    log = formats.read_meta(tmp_path / "d")["training"]["log"]
    assert log[-1]["fvu"] < log[0]["fvu"]
    assert "tok/s" in seen[-1] and "FVU" in seen[-1]


def test_bf16_trains(tmp_path, tiny_llama):
    s = TrainSettings(**{**SMALL, "dtype": "bfloat16", "checkpoint_every": 0, "site": "resid_post"})
    d = train(tiny_llama, s, tmp_path / "d")
    assert torch.isfinite(d.W_enc).all() and d.W_enc.dtype == torch.float32
    norms = d.W_dec.norm(dim=-1)  # an SAE's decoder rows keep one norm: 1 while training, then x the layer's scale
    scales = torch.tensor(formats.read_meta(tmp_path / "d")["training"]["scales"][1])
    assert torch.allclose(norms, scales[:, None].expand_as(norms), rtol=1e-4)


@pytest.mark.parametrize("change,needle", [(dict(k=100), "exceeds the dictionary size"), (dict(layers=[9]), "out of range"),
                                           (dict(n_tokens=10**9), "holds only"), (dict(site="mlp_out", skip=True), "skip"),
                                           (dict(dtype="fp8"), "dtype")])
def test_bad_input_is_refused_and_writes_nothing(tmp_path, tiny_llama, change, needle):
    with pytest.raises(WorkbenchError, match=needle):
        train(tiny_llama, TrainSettings(**{**SMALL, **change}), tmp_path / "d")
    assert not (tmp_path / "d").exists()


def test_a_folder_of_another_run_is_refused(tmp_path, tiny_llama):
    s = TrainSettings(**SMALL)
    train(tiny_llama, s, tmp_path / "d", max_steps=3)
    with pytest.raises(WorkbenchError, match="other settings"):
        train(tiny_llama, TrainSettings(**{**SMALL, "k": 5}), tmp_path / "d")


@pytest.mark.parametrize("site,skip", [("mlp", True), ("resid_post", False)])
def test_folded_scales_read_and_write_the_models_units(site, skip):
    from interp.features.loss import fold_scales

    d = random_dictionary(site=site, skip=skip, layers=(0, 1))
    x = torch.randn(2, 10, 32) * 7
    s_in = torch.tensor([7.0, 3.0])
    s_out = s_in if site != "mlp" else torch.tensor([0.5, 11.0])
    with torch.no_grad():
        trained_units = d(x / s_in[:, None, None]) * s_out[:, None, None]
        fold_scales(d, s_in, s_out)
        assert torch.allclose(d(x), trained_units, atol=1e-4)


def test_auxk_decodes_in_the_decoders_dtype_under_bf16_autocast():
    """CUDA's embedding bag has no bf16 gradient for its per-sample weights (the H100 run stopped
    there): AuxK must decode with the float32 decoder whatever the autocast."""
    d = random_dictionary(layers=(0,), d_sae=48, k=4)
    dead = torch.zeros(1, 48, dtype=torch.bool)
    dead[0, :20] = True
    x, y = torch.randn(1, 12, 32), torch.randn(1, 12, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        pre = d.pre_acts(x.bfloat16())
        assert pre.dtype == torch.bfloat16
        got = auxk_loss(d, pre, y, dead, torch.ones(1))
    got.sum().backward()
    assert got.dtype == torch.float32 and d.W_dec.grad is not None and d.W_dec.grad.dtype == torch.float32


@pytest.mark.parametrize("skip", [False, True])
def test_dense_decode_gives_the_sparse_decodes_loss_and_gradients(skip):
    d = random_dictionary(layers=(0, 1), d_sae=48, k=4, skip=skip)
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(2, 20, 32, generator=gen), torch.randn(2, 20, 32, generator=gen)
    dead = torch.zeros(2, 48, dtype=torch.bool)
    dead[:, :20] = True
    got = {}
    for decode in ("sparse", "dense"):
        d.zero_grad()
        out = step_loss(d, x, y, dead, auxk_alpha=0.5, decode=decode)
        out.loss.backward()
        got[decode] = (out.loss.detach(), {n: p.grad.clone() for n, p in d.named_parameters() if p.grad is not None})
    assert torch.allclose(got["sparse"][0], got["dense"][0], rtol=1e-6)
    assert got["sparse"][1].keys() == got["dense"][1].keys() and "W_dec" in got["dense"][1]
    for n, g in got["sparse"][1].items():
        assert torch.allclose(g, got["dense"][1][n], atol=1e-6), n


def test_dense_decode_trains_and_a_bad_decode_is_refused(tmp_path, tiny_llama):
    s = TrainSettings(site="mlp", layers=[1], d_sae=64, k=4, corpus="kjv", n_tokens=600, batch_tokens=256, seq_len=32,
                      decode="dense")  # fmt: skip
    d = train(tiny_llama, s, tmp_path / "dense")
    assert formats.read_meta(tmp_path / "dense")["training"]["settings"]["decode"] == "dense"
    assert d.W_dec.abs().sum() > 0
    with pytest.raises(WorkbenchError, match="decode must be one of sparse, dense"):
        TrainSettings(decode="bag").check_sizes()
