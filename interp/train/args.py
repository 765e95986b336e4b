"""Training knobs named as in Hugging Face's `TrainingArguments`, so people's habits carry over,
and the learning-rate schedules with the same formulas as `transformers.get_scheduler`.

HF's convention: the scheduler is stepped after each optimizer step, so optimizer step `s`
(0-based) uses `learning_rate * lr_lambda(s)`; with warmup the very first step runs at lr 0.
"""

from __future__ import annotations

import math
import types
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import Any, get_args, get_type_hints

from interp.errors import WorkbenchError


def _linear(step: int, warmup: int, total: int) -> float:
    if step < warmup:
        return step / max(1, warmup)
    return max(0.0, (total - step) / max(1, total - warmup))


def _cosine(step: int, warmup: int, total: int, num_cycles: float = 0.5) -> float:
    if step < warmup:
        return step / max(1, warmup)
    progress = (step - warmup) / max(1, total - warmup)
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * num_cycles * 2.0 * progress)))


def _constant(step: int, warmup: int, total: int) -> float:
    return 1.0


def _constant_with_warmup(step: int, warmup: int, total: int) -> float:
    return step / max(1, warmup) if step < warmup else 1.0


SCHEDULERS: dict[str, Callable[[int, int, int], float]] = {
    "linear": _linear,
    "cosine": _cosine,
    "constant": _constant,
    "constant_with_warmup": _constant_with_warmup,
}
OPTIMIZERS = ("adamw", "adafactor")


def _check_scheduler(name: str) -> None:
    if name not in SCHEDULERS:
        raise WorkbenchError(f"unknown lr_scheduler_type {name!r}; choose one of {', '.join(SCHEDULERS)}")


def lr_lambda(name: str, warmup_steps: int, max_steps: int) -> Callable[[int], float]:
    """The multiplier of the base learning rate at optimizer step `step` (HF's formulas)."""
    _check_scheduler(name)
    fn = SCHEDULERS[name]
    return lambda step: fn(step, warmup_steps, max_steps)


COMPILE_MODES = (None, "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


@dataclass
class TrainingArguments:
    output_dir: str | None = None  # where checkpoint-{step}/ folders and metrics.jsonl go (None: write nothing)
    overwrite_output_dir: bool = False  # start afresh in an output_dir that holds checkpoints, deleting them first
    max_steps: int = 1000  # optimizer steps to train for
    learning_rate: float = 1e-3  # peak learning rate
    warmup_steps: int = 0  # linear warmup from 0 over this many steps
    lr_scheduler_type: str = "linear"  # linear | cosine | constant | constant_with_warmup
    save_steps: int = 500  # checkpoint every this many steps (0 = only at the end)
    eval_steps: int = 100  # evaluate (loss, ICL score, head scores) every this many steps (0 = never)
    logging_steps: int = 10  # log the training loss every this many steps (0 = only at the end)
    per_device_train_batch_size: int = 8  # sequences per device per micro-batch
    gradient_accumulation_steps: int = 1  # micro-batches per optimizer step
    optim: str = "adamw"  # adamw | adafactor (factored second moments: fewer optimizer copies)
    weight_decay: float = 0.0  # decoupled weight decay on matrices (not biases / norms)
    adam_beta1: float = 0.9  # AdamW beta1
    adam_beta2: float = 0.999  # AdamW beta2
    adam_epsilon: float = 1e-8  # AdamW epsilon
    max_grad_norm: float = 1.0  # clip the global gradient norm (0 = no clipping)
    bf16: bool = False  # bfloat16 autocast (CPU or CUDA)
    fp16: bool = False  # float16 autocast with loss scaling (CUDA only)
    seed: int = 42  # seeds the data order and every RNG (the model's init seed is in its spec)
    resume_from_checkpoint: str | None = None  # a checkpoint folder, or "latest" in output_dir
    save_total_limit: int | None = None  # keep only the newest N checkpoints (None = keep all)
    torch_compile: bool = False  # torch.compile the training forward and loss (helps on GPU)
    torch_compile_mode: str | None = None  # as HF: None/"default", "reduce-overhead" (CUDA graphs), "max-autotune"
    device: str | None = None  # "cpu", "cuda", ... (None = cuda if available)
    n_devices: int = 1  # data-parallel processes (set from torchrun's world size; counts in the effective batch)

    @property
    def effective_batch_size(self) -> int:
        """devices x per-device batch x accumulation, as in HF."""
        return self.n_devices * self.per_device_train_batch_size * self.gradient_accumulation_steps

    def validate(self) -> TrainingArguments:
        """Refuse values no run can use, each with a one-line message naming the argument."""
        check_field_types(self)

        ranges = (
            (("max_steps", "per_device_train_batch_size", "gradient_accumulation_steps", "n_devices", "learning_rate",
              "adam_epsilon"), lambda v: v > 0, "positive"),
            (("warmup_steps", "save_steps", "eval_steps", "logging_steps", "weight_decay", "max_grad_norm", "seed"),
             lambda v: v >= 0, "zero or positive"),
            (("adam_beta1", "adam_beta2"), lambda v: 0 <= v < 1, "in [0, 1)"),
        )
        for names, ok, words in ranges:
            for name in names:
                value = getattr(self, name)
                if not (math.isfinite(value) and ok(value)):  # NaN and inf are refused too
                    raise WorkbenchError(f"{name} must be {words}, got {value}")
        if self.warmup_steps > self.max_steps:
            raise WorkbenchError(
                f"warmup_steps ({self.warmup_steps}) is longer than max_steps ({self.max_steps}); lower warmup_steps"
            )
        _check_scheduler(self.lr_scheduler_type)
        if self.optim not in OPTIMIZERS:
            raise WorkbenchError(f"unknown optim {self.optim!r}; choose one of {', '.join(OPTIMIZERS)}")
        if self.bf16 and self.fp16:
            raise WorkbenchError("choose one of bf16 and fp16, not both")
        if self.torch_compile_mode not in COMPILE_MODES:
            raise WorkbenchError(f"unknown torch_compile_mode {self.torch_compile_mode!r}; choose one of "
                                 f"{', '.join(m for m in COMPILE_MODES if m)}")
        if self.save_total_limit is not None and self.save_total_limit < 1:
            raise WorkbenchError(f"save_total_limit must be at least 1, got {self.save_total_limit}")
        if self.overwrite_output_dir and resume_requested(self.resume_from_checkpoint):
            raise WorkbenchError("overwrite_output_dir deletes the checkpoints resume_from_checkpoint would continue; "
                                 "choose one of them")
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainingArguments:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise WorkbenchError(f"unknown training arguments {sorted(unknown)}; known: {sorted(known)}")
        return cls(**data)

    def replace(self, **changes: Any) -> TrainingArguments:
        return TrainingArguments.from_dict({**self.to_dict(), **changes})


def resume_requested(resume: str | None) -> bool:
    """Whether a resume_from_checkpoint value asks to continue a run (None, "", "false", "none" do not)."""
    return resume is not None and str(resume).lower() not in ("", "false", "none")


# Knobs that may differ between a run and its resumption without changing what is computed.
RESUMABLE_CHANGES = {"output_dir", "overwrite_output_dir", "resume_from_checkpoint", "max_steps", "save_steps",
                     "eval_steps", "logging_steps", "save_total_limit", "device", "torch_compile",
                     "torch_compile_mode"}

_KINDS = {bool: "true or false", int: "a whole number", float: "a number", str: "text"}


def _fits(value: Any, kind: type) -> bool:
    if kind is bool or isinstance(value, bool):  # bool is an int to Python, not to us
        return kind is bool and isinstance(value, bool)
    if kind is float:
        return isinstance(value, (int, float))
    return isinstance(value, kind)


def check_field_types(obj: Any, what: str = "") -> None:
    """Each field of the dataclass `obj` holds its annotated type (None only where the annotation
    allows it; a whole number will do for a float). `what` starts the message, e.g. "data mix"."""
    hints = get_type_hints(type(obj))
    for f in fields(obj):
        hint, value = hints[f.name], getattr(obj, f.name)
        options = get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
        kinds = [k for k in options if k is not type(None)]
        if value is None and len(kinds) < len(options):
            continue
        if not any(_fits(value, k) for k in kinds):
            raise WorkbenchError(f"{what + ' ' if what else ''}{f.name} must be {_KINDS[kinds[0]]}, got {value!r}")
