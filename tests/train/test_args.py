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
        (dict(adam_beta1=1.0), r"adam_beta1 must be in \[0, 1\), got 1.0"),
        (dict(adam_beta2=-0.1), r"adam_beta2 must be in \[0, 1\)"),
        (dict(adam_epsilon=0.0), "adam_epsilon must be positive"),
        (dict(learning_rate=float("inf")), "learning_rate must be positive, got inf"),
        (dict(weight_decay=float("nan")), "weight_decay must be zero or positive, got nan"),
        (dict(seed=-3), "seed must be zero or positive"),
        (dict(max_steps=2.5), "max_steps must be a whole number, got 2.5"),
        (dict(learning_rate="fast"), "learning_rate must be a number, got 'fast'"),
        (dict(bf16="yes"), "bf16 must be true or false"),
        (dict(save_total_limit=True), "save_total_limit must be a whole number, got True"),
        (dict(overwrite_output_dir=True, resume_from_checkpoint="latest"), "overwrite_output_dir deletes the checkpoints"),
        (dict(torch_compile_mode="fastest"), "unknown torch_compile_mode 'fastest'; choose one of default, reduce-overhead"),
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


def test_knobs_at_their_limits_are_accepted():
    TrainingArguments(adam_beta1=0.0, adam_beta2=0.0, weight_decay=0.0, max_grad_norm=0.0, warmup_steps=0, seed=0,
                      logging_steps=0, eval_steps=0, save_steps=0, learning_rate=1, save_total_limit=None,
                      overwrite_output_dir=True, resume_from_checkpoint="false").validate()


def test_logging_steps_zero_logs_only_the_last_step(tiny):
    args = TrainingArguments(max_steps=3, logging_steps=0, eval_steps=0, save_steps=0, per_device_train_batch_size=2,
                             device="cpu")
    assert [r["step"] for r in train("attn-only-1l", args, **tiny).metrics] == [3]


def test_bad_data_mixes_and_architectures_are_refused():
    from interp.train import DataMix

    for mix, message in [(dict(corpus="abc"), "data mix corpus must be a number, got 'abc'"),
                         (dict(repeated=True), "data mix repeated must be a number, got True"),
                         (dict(ioi=float("nan")), "data mix weights must be non-negative"),
                         (dict(min_segment=4.0), "data mix min_segment must be a whole number"),
                         (dict(min_segment=9, max_segment=8), "need 1 <= min_segment <= max_segment")]:
        with pytest.raises(WorkbenchError, match=message):
            DataMix(**mix)
    with pytest.raises(WorkbenchError, match=r"unknown data mix fields \['corpse'\]"):
        DataMix().with_overrides(corpse=1.0)
    assert DataMix().with_overrides(repeated=0.5) == DataMix(repeated=0.5)
    with pytest.raises(WorkbenchError, match="architecture d_model must be a whole number, got '32'"):
        get_preset("attn-only-1l").with_overrides(d_model="32")
    with pytest.raises(WorkbenchError, match="architecture vocab_size must be a whole number"):
        get_preset("attn-only-1l").with_overrides(vocab_size=300.5)


def test_fp16_on_cpu_is_refused(tiny):
    with pytest.raises(WorkbenchError, match="fp16 mixed precision needs a CUDA device"):
        train("attn-only-1l", TrainingArguments(fp16=True, device="cpu"), **tiny)


def test_effective_batch_is_devices_times_batch_times_accumulation():
    args = TrainingArguments(per_device_train_batch_size=3, gradient_accumulation_steps=5)
    assert args.effective_batch_size == 15
