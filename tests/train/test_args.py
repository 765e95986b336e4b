"""Knobs: HF's scheduler formulas, bad values refused with clear messages."""

from __future__ import annotations

import math

import pytest
import torch

from interp.errors import WorkbenchError
from interp.train import SCHEDULERS, TrainingArguments, get_preset, lr_lambda, train


@pytest.mark.parametrize(
    "name, expected",
    [
        # warmup 4 of 12 steps: warmup ramps 0, 1/4, 2/4, 3/4, then the documented decay
        ("linear", [0, 0.25, 0.5, 0.75, 1.0, 7 / 8, 6 / 8, 5 / 8, 4 / 8, 3 / 8, 2 / 8, 1 / 8, 0.0]),
        ("cosine", [0, 0.25, 0.5, 0.75] + [0.5 * (1 + math.cos(math.pi * k / 8)) for k in range(9)]),
        ("constant", [1.0] * 13),
        ("constant_with_warmup", [0, 0.25, 0.5, 0.75] + [1.0] * 9),
    ],
)
def test_schedulers_give_the_documented_rates(name, expected):
    fn = lr_lambda(name, warmup_steps=4, max_steps=12)
    assert [fn(s) for s in range(13)] == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("name", list(SCHEDULERS))
def test_schedulers_match_transformers_get_scheduler(name):
    from transformers import get_scheduler

    def rates(make):
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
        sched = make(opt)
        out = []
        for _ in range(20):
            out.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        return out

    warm = 0 if name == "constant" else 5
    ours = rates(lambda o: torch.optim.lr_scheduler.LambdaLR(o, lr_lambda(name, warm, 20)))
    hf = rates(lambda o: get_scheduler(name, o, num_warmup_steps=warm if warm else None, num_training_steps=20))
    assert ours == pytest.approx(hf, abs=1e-12)


def test_the_trainer_uses_the_scheduled_rate(tiny):
    args = TrainingArguments(max_steps=6, warmup_steps=2, learning_rate=0.01, lr_scheduler_type="linear",
                             eval_steps=0, save_steps=0, logging_steps=1, per_device_train_batch_size=2, device="cpu")
    result = train("attn-only-1l", args, **tiny)
    fn = lr_lambda("linear", 2, 6)
    assert [r["learning_rate"] for r in result.metrics] == pytest.approx([0.01 * fn(s) for s in range(6)])


@pytest.mark.parametrize(
    "knobs, message",
    [
        (dict(max_steps=-5), "max_steps must be positive"),
        (dict(max_steps=0), "max_steps must be positive"),
        (dict(warmup_steps=50, max_steps=10), "warmup_steps .50. is longer than max_steps .10."),
        (dict(lr_scheduler_type="exponential"), "unknown lr_scheduler_type 'exponential'; choose one of linear"),
        (dict(optim="sgd"), "unknown optim 'sgd'"),
        (dict(learning_rate=0), "learning_rate must be positive"),
        (dict(per_device_train_batch_size=0), "per_device_train_batch_size must be positive"),
        (dict(gradient_accumulation_steps=-1), "gradient_accumulation_steps must be positive"),
        (dict(save_steps=-1), "save_steps must be zero or positive"),
        (dict(bf16=True, fp16=True), "bf16 and fp16"),
    ],
)
def test_bad_knobs_are_refused(knobs, message):
    with pytest.raises(WorkbenchError, match=message):
        TrainingArguments(**knobs).validate()
    with pytest.raises(WorkbenchError, match=message):  # train() validates before doing any work
        train("attn-only-1l", TrainingArguments(**knobs))


def test_unknown_preset_and_unknown_fields_are_refused():
    with pytest.raises(WorkbenchError, match="unknown preset 'attn-only-9l'; choose one of attn-only-1l"):
        get_preset("attn-only-9l")
    with pytest.raises(WorkbenchError, match="unknown preset"):
        train("attn-only-9l")
    with pytest.raises(WorkbenchError, match="unknown training arguments"):
        TrainingArguments.from_dict({"max_step": 3})
    with pytest.raises(WorkbenchError, match="unknown architecture overrides"):
        get_preset("attn-only-1l").with_overrides(d_modle=3)


def test_fp16_on_cpu_is_refused(tiny):
    with pytest.raises(WorkbenchError, match="fp16 mixed precision needs a CUDA device"):
        train("attn-only-1l", TrainingArguments(fp16=True, device="cpu"), **tiny)


def test_effective_batch_is_devices_times_batch_times_accumulation():
    args = TrainingArguments(per_device_train_batch_size=3, gradient_accumulation_steps=5)
    assert args.effective_batch_size == 15
