"""Training works: loss falls, accumulation equals a big batch, both optimizers train."""

from __future__ import annotations

import math

import pytest
import torch

from interp.models.inhouse import native_state_dict
from interp.train import TrainingArguments, train
from interp.train.data import DataMix

TEXT_ONLY = DataMix(corpus=1.0)


def knobs(**kw) -> TrainingArguments:
    base = dict(max_steps=30, learning_rate=3e-3, warmup_steps=0, lr_scheduler_type="constant", eval_steps=0,
                logging_steps=1, save_steps=0, per_device_train_batch_size=8, device="cpu", seed=1)
    return TrainingArguments(**{**base, **kw})


def losses(result) -> list[float]:
    return [r["loss"] for r in result.metrics if "loss" in r]


def test_a_few_steps_reduce_the_loss(tiny):
    result = train("attn-only-1l", knobs(), data=TEXT_ONLY, **tiny)
    curve = losses(result)
    assert len(curve) == 30 and result.global_step == 30
    assert sum(curve[-5:]) / 5 < curve[0] - 1.0, curve


@pytest.mark.parametrize("optim", ["adamw", "adafactor"])
def test_both_optimizers_train(tiny, optim):
    lr = 3e-3 if optim == "adamw" else 3e-2
    curve = losses(train("attn-only-2l", knobs(optim=optim, learning_rate=lr), data=TEXT_ONLY, **tiny))
    assert sum(curve[-5:]) / 5 < curve[0] - 1.0, (optim, curve)


def test_adafactor_keeps_fewer_optimizer_numbers(tiny):
    from interp.train.run import _optimizer

    result = train("attn-only-1l", knobs(max_steps=1), data=TEXT_ONLY, **tiny)
    params = list(result.model.bridge.parameters())
    sizes = {}
    for optim in ("adamw", "adafactor"):
        opt = _optimizer(params, knobs(optim=optim), torch.device("cpu"))
        for p in params:
            p.grad = torch.ones_like(p)
        opt.step()
        sizes[optim] = sum(t.numel() for s in opt.state.values() for t in s.values() if torch.is_tensor(t))
    assert sizes["adafactor"] < sizes["adamw"] / 2, sizes


def test_gradient_accumulation_matches_one_big_batch(tiny):
    # adam_epsilon=1 makes AdamW's first step ~ lr * g / (|g| + 1): linear in the gradient, so equal
    # weights after the step mean equal gradients (with eps=1e-8 it is ~ lr * sign(g), which turns
    # float noise in near-zero gradients into full-size differences).
    one = dict(max_steps=1, adam_epsilon=1.0)
    big = train("attn-only-2l", knobs(**one, per_device_train_batch_size=8), **tiny)
    acc = train("attn-only-2l", knobs(**one, per_device_train_batch_size=2, gradient_accumulation_steps=4), **tiny)
    assert acc.args.effective_batch_size == big.args.effective_batch_size == 8
    assert losses(acc)[0] == pytest.approx(losses(big)[0], abs=1e-5)
    a, b = native_state_dict(acc.model), native_state_dict(big.model)
    assert acc.metrics[0]["grad_norm"] == pytest.approx(big.metrics[0]["grad_norm"], rel=1e-5)
    untrained = native_state_dict(train("attn-only-2l", knobs(**one, learning_rate=1e-12), **tiny).model)
    moved = max((a[k] - untrained[k]).abs().max().item() for k in a)
    assert moved > 1e-4  # the step really changed the weights...
    for k in a:  # ...by the same amount either way
        # atol: float32 spacing of O(1) weights is ~1e-7; the step itself moves them by up to ~1e-3
        torch.testing.assert_close(a[k] - untrained[k], b[k] - untrained[k], atol=2e-7, rtol=1e-4)


def test_bridge_forward_and_fast_forward_train_the_same(tiny):
    fast = train("llama-2l", knobs(max_steps=2), **tiny)
    slow = train("llama-2l", knobs(max_steps=2), use_bridge_forward=True, **tiny)
    assert losses(fast) == pytest.approx(losses(slow), abs=1e-4)


def test_bf16_autocast_trains_on_cpu(tiny):
    curve = losses(train("attn-only-1l", knobs(bf16=True, max_steps=15), data=TEXT_ONLY, **tiny))
    assert curve[-1] < curve[0] - 0.5


def test_eval_records_icl_and_head_scores(tiny, tmp_path):
    result = train("attn-only-2l", knobs(max_steps=4, eval_steps=2, output_dir=str(tmp_path)), **tiny)
    evals = [r for r in result.metrics if "eval_loss" in r]
    assert [r["step"] for r in evals] == [0, 2, 4]
    for r in evals:
        assert 0 <= r["induction_score"] <= 1 and 0 <= r["prev_token_score"] <= 1
        assert len(r["induction_head"]) == 2 and r["induction_head"][0] in (0, 1)
        assert r["icl_score_se"] > 0 and math.isfinite(r["icl_score"]) and math.isfinite(r["icl_token_score"])
        assert math.isfinite(r["repeat_bigram_gap"])
    from interp.train import read_metrics

    assert read_metrics(tmp_path) == result.metrics


def test_progress_callback_sees_every_step(tiny):
    seen = []
    train("attn-only-1l", knobs(max_steps=3), progress=lambda d, t, m: seen.append((d, t)), **tiny)
    assert seen == [(1, 3), (2, 3), (3, 3)]
