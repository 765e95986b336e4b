"""The training loop: `train(preset, args)` builds (or resumes) an in-house model, trains it on
the preset's data mix with HF-Trainer-style knobs, evaluates, logs and checkpoints.

`train` composes four pieces: `setup` (interp.train.run) checks everything and builds a `Run`,
`train_step` does one optimizer step, `evaluate_run` measures the model (interp.train.metrics),
and `save` writes a checkpoint.

Exact resumption: the data stream is a pure function of (seed, sequence index), and a
checkpoint stores the weights, optimizer, scheduler, RNG and the number of sequences consumed,
so a resumed run computes bit-for-bit what the uninterrupted run would have (on the same device).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from interp.models import Model
from interp.models.inhouse import NativeSpec
from interp.train.args import TrainingArguments
from interp.train.checkpoints import rotate_checkpoints, save_checkpoint
from interp.train.data import DataMix
from interp.train.metrics import evaluate
from interp.train.presets import Preset
from interp.train.run import Run, close, setup
from interp.types import Progress


@dataclass
class TrainResult:
    model: Model  # the trained model (its bridge shares weights with the fast forward)
    spec: NativeSpec  # its architecture
    args: TrainingArguments  # the arguments the run used
    global_step: int  # optimizer steps done
    metrics: list[dict] = field(default_factory=list)  # every record written to metrics.jsonl
    output_dir: Path | None = None  # where checkpoints and metrics.jsonl are
    wall_time_s: float = 0.0  # training time of this call


@dataclass
class StepStats:
    loss: torch.Tensor  # the step's mean training loss (0-dim, on the device; averaged across processes)
    grad_norm: torch.Tensor  # the global gradient norm before clipping
    learning_rate: float  # the rate the step used
    tokens: int  # tokens trained on in this step, by all processes together


# -- one step, one evaluation, one checkpoint ----------------------------------------------------


def _backward(train_loss, tokens, accum: int, scaler) -> torch.Tensor:
    """Forward and backward of one micro-batch; returns its (detached) share of the step's loss
    (a copy: with CUDA graphs the graph's own output is overwritten by the next replay)."""
    loss = train_loss(tokens) / accum
    (scaler.scale(loss) if scaler is not None else loss).backward()
    return loss.detach().clone()


def _optimizer_step(params, optimizer, scheduler, scaler, max_grad_norm: float) -> torch.Tensor:
    """Unscale (fp16), clip, step, schedule, zero; returns the gradient norm before clipping."""
    if scaler is not None:
        scaler.unscale_(optimizer)
    grad_norm = torch.nn.utils.clip_grad_norm_(params, max_grad_norm if max_grad_norm > 0 else float("inf"))
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return grad_norm


def train_step(run: Run) -> StepStats:
    """One optimizer step: gradient_accumulation_steps micro-batches forward and backward,
    gradients averaged across processes, then clip, step and schedule."""
    args, accum = run.args, run.args.gradient_accumulation_steps
    lr = run.optimizer.param_groups[0]["lr"]
    loss = torch.zeros((), device=run.device)
    tokens = 0
    for _ in range(accum):
        batch = run.batches.next().to(run.device, non_blocking=True)
        loss += _backward(run.train_loss, batch, accum, run.scaler)
        tokens += batch.numel() * run.batches.world
    if run.dp is not None:
        run.dp.average_gradients(run.params)
        loss = run.dp.mean(loss)
    grad_norm = _optimizer_step(run.params, run.optimizer, run.scheduler, run.scaler, args.max_grad_norm)
    run.step += 1
    return StepStats(loss, grad_norm, lr, tokens)


def evaluate_run(run: Run) -> dict[str, Any]:
    """The evaluation metrics of the model as it is now (interp.train.metrics.evaluate)."""
    run.model.bridge.eval()
    try:
        return evaluate(run.model, run.forward, run.eval_data)
    finally:
        run.model.bridge.train()


def save(run: Run, elapsed_s: float) -> Path:
    """Write output_dir/checkpoint-{step}/ (and drop the oldest beyond save_total_limit)."""
    state = {"preset": run.preset, "corpus": run.corpus, "data_mix": asdict(run.mix), "args": run.args.to_dict(),
             "global_step": run.step, "data_position": run.batches.position, "elapsed_s": elapsed_s}
    path = save_checkpoint(run.output_dir, run.step, run.model, run.spec, state, run.optimizer, run.scheduler,
                           run.scaler)
    rotate_checkpoints(run.output_dir, run.args.save_total_limit)
    return path


# -- the loop ------------------------------------------------------------------------------------


def _due(step: int, every: int, last: int) -> bool:
    """Every `every` steps (0: never) and at the last step."""
    return step == last or (every > 0 and step % every == 0)


def _summary(latest: dict[str, Any]) -> str:
    parts = []
    for key, label in (("loss", "loss"), ("eval_loss", "eval"), ("icl_score", "icl"), ("repeat_bigram_gap", "gap"),
                       ("induction_score", "ind"), ("prev_token_score", "prev")):
        if key in latest:
            parts.append(f"{label} {latest[key]:.3f}")
    return " ".join(parts)


def train(
    preset: str | Preset = "attn-only-2l",
    args: TrainingArguments | None = None,
    *,
    corpus: str | None = None,
    arch: dict[str, Any] | None = None,
    data: DataMix | None = None,
    progress: Progress | None = None,
    progress_bar: bool = False,
    use_bridge_forward: bool = False,
) -> TrainResult:
    """Train (or resume) a preset. `arch` overrides architecture fields (e.g. d_model=32,
    vocab_size=512), `data` the preset's data mix, `corpus` the corpus spec (default "kjv").
    `progress(step, max_steps, message)` is called after every step; `progress_bar` shows tqdm.
    `use_bridge_forward` trains through the hooked bridge (slow reference) instead of FastLM."""
    run = setup(preset, args, corpus=corpus, arch=arch, data=data, use_bridge_forward=use_bridge_forward)
    args, bar = run.args, None
    try:
        if run.eval_data is not None and run.step == 0:
            run.log.append({"step": 0, "elapsed_s": 0.0, **evaluate_run(run)})
        if progress_bar and run.main:
            from tqdm.auto import tqdm

            bar = tqdm(total=args.max_steps, initial=run.step, desc=f"train {run.preset}", unit="step",
                       dynamic_ncols=True)
        run.model.bridge.train()
        losses: list[torch.Tensor] = []
        latest: dict[str, Any] = {}
        t_start, tokens_done = time.perf_counter(), 0
        while run.step < args.max_steps:
            stats = train_step(run)
            losses.append(stats.loss)
            tokens_done += stats.tokens
            now = run.elapsed_s + time.perf_counter() - t_start
            record: dict[str, Any] = {}
            if _due(run.step, args.logging_steps, args.max_steps):
                record.update(loss=float(torch.stack(losses).mean()), learning_rate=stats.learning_rate,
                              grad_norm=float(stats.grad_norm),
                              tokens_per_s=tokens_done / max(time.perf_counter() - t_start, 1e-9))
                losses = []
            if run.eval_data is not None and _due(run.step, args.eval_steps, args.max_steps):
                record.update(evaluate_run(run))
            if record:
                record = {"step": run.step, "elapsed_s": round(now, 3), **record}
                run.log.append(record)
                latest.update(record)
            if run.writes and _due(run.step, args.save_steps, args.max_steps):
                save(run, now)
            message = _summary(latest)
            if bar is not None:
                bar.update(1)
                bar.set_postfix_str(message, refresh=False)
            if progress is not None:
                progress(run.step, args.max_steps, message)
    finally:
        if bar is not None:
            bar.close()
        close(run)
    if run.device.type == "cuda":
        torch.cuda.synchronize()
    run.model.bridge.eval()
    return TrainResult(run.model, run.spec, args, run.step, run.log.records, run.output_dir,
                       time.perf_counter() - t_start)
