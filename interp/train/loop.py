"""The training loop: `train(preset, args)` builds (or resumes) an in-house model, trains it on
the preset's data mix with HF-Trainer-style knobs, evaluates, logs and checkpoints.

Exact resumption: the data stream is a pure function of (seed, sequence index), and a
checkpoint stores the weights, optimizer, scheduler, RNG and the number of sequences consumed,
so a resumed run computes bit-for-bit what the uninterrupted run would have (on the same device).
"""

from __future__ import annotations

import contextlib
import json
import time
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from interp.errors import WorkbenchError
from interp.models.device import pick_device
from interp.models import Model
from interp.models.inhouse import NativeSpec, build_native, load_inhouse
from interp.train.args import RESUMABLE_CHANGES, TrainingArguments, lr_lambda
from interp.train.checkpoints import (
    load_training_state,
    resolve_resume,
    rotate_checkpoints,
    save_checkpoint,
    set_rng_state,
)
from interp.train.distributed import setup as setup_data_parallel
from interp.train.data import DataMix, TokenStream, corpus_token_arrays, heldout_batch, ioi_tokens
from interp.train.forward import FastLM, lm_loss
from interp.train.metrics import EvalData, evaluate, make_eval_data
from interp.train.presets import Preset, get_preset
from interp.train.tokenizer import make_tokenizer

Progress = Callable[[int, int, str], None]
N_EVAL_SEQUENCES = 512  # held-out windows scored at each evaluation (fewer if the held-out text is short)


@dataclass
class TrainResult:
    model: Model  # the trained model (its bridge shares weights with the fast forward)
    spec: NativeSpec  # its architecture
    args: TrainingArguments  # the arguments the run used
    global_step: int  # optimizer steps done
    metrics: list[dict] = field(default_factory=list)  # every record written to metrics.jsonl
    output_dir: Path | None = None  # where checkpoints and metrics.jsonl are
    wall_time_s: float = 0.0  # training time of this call


def training_arguments(preset: str | Preset, **knobs: Any) -> TrainingArguments:
    """The preset's training defaults with `knobs` on top."""
    preset = get_preset(preset) if isinstance(preset, str) else preset
    return TrainingArguments.from_dict({**preset.training, **knobs})


def _optimizer(params: list[torch.nn.Parameter], args: TrainingArguments, device: torch.device):
    decay = [p for p in params if p.ndim >= 2]  # matrices decay; biases and norm scales do not (as HF)
    no_decay = [p for p in params if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if args.optim == "adamw":
        return torch.optim.AdamW(groups, lr=args.learning_rate, betas=(args.adam_beta1, args.adam_beta2),
                                 eps=args.adam_epsilon, fused=device.type == "cuda")
    return torch.optim.Adafactor(groups, lr=args.learning_rate)


def _autocast(args: TrainingArguments, device: torch.device):
    if args.bf16:
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if args.fp16:
        return torch.autocast(device.type, dtype=torch.float16)
    return contextlib.nullcontext()


def _check_resumable(saved: dict, args: TrainingArguments) -> TrainingArguments:
    old = TrainingArguments.from_dict(saved["args"])
    changed = sorted(k for k, v in args.to_dict().items() if k not in RESUMABLE_CHANGES and old.to_dict()[k] != v)
    if changed:
        raise WorkbenchError(
            f"cannot resume with different {', '.join(changed)} than the checkpoint's run; drop those flags to resume"
        )
    return args


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
    preset = get_preset(preset) if isinstance(preset, str) else preset
    args = (args or training_arguments(preset)).validate()
    device = pick_device(args.device)
    dp = setup_data_parallel(args.n_devices, device)  # None unless launched by torchrun with several processes
    if dp is not None:
        device = dp.device
        args = args.replace(n_devices=dp.world)
    if args.fp16 and device.type != "cuda":
        raise WorkbenchError("fp16 mixed precision needs a CUDA device; use bf16 on CPU")
    output_dir = Path(args.output_dir) if args.output_dir else None
    resume = resolve_resume(args.resume_from_checkpoint, args.output_dir)
    main_process = dp is None or dp.is_main  # only it evaluates, logs and writes

    if resume is not None:
        saved = load_training_state(resume)
        state = saved["trainer_state"]
        _check_resumable(state, args)
        model, spec, _ = load_inhouse(resume, device=device)
        bridge, tokenizer = model.bridge, model.tokenizer
        corpus, mix = state["corpus"], DataMix(**state["data_mix"])
        step, position, elapsed = state["global_step"], state["data_position"], state.get("elapsed_s", 0.0)
        preset_name = state["preset"]
    else:
        if arch:
            preset = preset.with_overrides(**arch)
        mix = data or preset.data
        tokenizer = make_tokenizer(preset.tokenizer, corpus, preset.vocab_size)
        spec = replace(preset.spec, d_vocab=len(tokenizer))
        spec.validate()
        model = build_native(spec, tokenizer, device=device, name=preset.name)
        bridge = model.bridge
        step, position, elapsed, preset_name = 0, 0, 0.0, preset.name
    mix.weights()

    train_tokens, heldout = corpus_token_arrays(corpus, tokenizer)
    bos = tokenizer.bos_token_id
    stream = TokenStream(train_tokens, mix, spec.n_ctx, spec.d_vocab, bos, args.seed,
                         ioi=ioi_tokens(tokenizer) if mix.ioi > 0 else None)
    eval_data: EvalData | None = None
    if args.eval_steps and main_process:
        eval_data = make_eval_data(model, heldout_batch(heldout, spec.n_ctx, N_EVAL_SEQUENCES, bos))

    fast = FastLM(bridge, spec).to(device)
    forward = (lambda t: bridge(t)) if use_bridge_forward else fast
    train_forward = torch.compile(fast) if args.torch_compile and not use_bridge_forward else forward
    params = [p for p in bridge.parameters() if p.requires_grad]
    if dp is not None:
        dp.broadcast_parameters(params)
    optimizer = _optimizer(params, args, device)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_lambda(args.lr_scheduler_type, args.warmup_steps, args.max_steps))
    scaler = torch.amp.GradScaler(device.type) if args.fp16 else None
    if resume is not None:
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        if scaler is not None and saved["scaler"] is not None:
            scaler.load_state_dict(saved["scaler"])
        set_rng_state(saved["rng_state"])
    else:
        torch.manual_seed(args.seed)

    metrics_path = output_dir / "metrics.jsonl" if output_dir and main_process else None
    records = _start_metrics(metrics_path, step)
    run_state = {"preset": preset_name, "corpus": corpus or "kjv", "data_mix": asdict(mix), "args": args.to_dict()}

    def log(record: dict) -> None:
        records.append(record)
        if metrics_path is not None:
            with open(metrics_path, "a") as fh:
                fh.write(json.dumps(record) + "\n")

    def run_eval(record: dict) -> None:
        bridge.eval()
        record.update(evaluate(model, forward, eval_data))
        bridge.train()

    if eval_data is not None and step == 0:
        record = {"step": 0, "elapsed_s": 0.0}
        run_eval(record)
        log(record)

    bar = None
    if progress_bar and main_process:
        from tqdm.auto import tqdm

        bar = tqdm(total=args.max_steps, initial=step, desc=f"train {preset_name}", unit="step", dynamic_ncols=True)
    bridge.train()
    batch, accum = args.per_device_train_batch_size, args.gradient_accumulation_steps
    losses_since_log: list[float] = []
    t_start = time.perf_counter()
    tokens_done = 0
    latest: dict[str, Any] = {}
    # The next micro-batch is built in a background thread while the current one trains.
    prefetch = ThreadPoolExecutor(max_workers=1)
    rank, world = (dp.rank, dp.world) if dp is not None else (0, 1)
    # each process takes its own slice of every global micro-batch of world x batch sequences
    upcoming = prefetch.submit(stream.batch, position + rank * batch, batch)
    try:
        while step < args.max_steps:
            lr = optimizer.param_groups[0]["lr"]
            step_loss = torch.zeros((), device=device)
            for _ in range(accum):
                tokens = upcoming.result().to(device, non_blocking=True)
                position += batch * world
                upcoming = prefetch.submit(stream.batch, position + rank * batch, batch)
                step_loss += _backward(train_forward, tokens, accum, args, device, scaler)
                tokens_done += tokens.numel() * world
            if dp is not None:
                dp.average_gradients(params)
                step_loss = dp.mean(step_loss)
            grad_norm = _optimizer_step(params, optimizer, scheduler, scaler, args.max_grad_norm)
            step += 1
            losses_since_log.append(step_loss)

            now = elapsed + time.perf_counter() - t_start
            record: dict[str, Any] = {}
            if step % args.logging_steps == 0 or step == args.max_steps:
                record.update(loss=float(torch.stack(losses_since_log).mean()), learning_rate=lr,
                              grad_norm=float(grad_norm),
                              tokens_per_s=tokens_done / max(time.perf_counter() - t_start, 1e-9))
                losses_since_log = []
            if eval_data is not None and (step % args.eval_steps == 0 or step == args.max_steps):
                run_eval(record)
            if record:
                record = {"step": step, "elapsed_s": round(now, 3), **record}
                log(record)
                latest.update(record)
            if output_dir is not None and main_process and ((args.save_steps and step % args.save_steps == 0) or step == args.max_steps):
                state = {**run_state, "global_step": step, "data_position": position, "elapsed_s": now}
                save_checkpoint(output_dir, step, model, spec, state, optimizer, scheduler, scaler)
                rotate_checkpoints(output_dir, args.save_total_limit)
            message = _summary(latest)
            if bar is not None:
                bar.update(1)
                bar.set_postfix_str(message, refresh=False)
            if progress is not None:
                progress(step, args.max_steps, message)
    finally:
        prefetch.shutdown(cancel_futures=True)
        if bar is not None:
            bar.close()
        if dp is not None:
            dp.close()
    if device.type == "cuda":
        torch.cuda.synchronize()
    bridge.eval()
    return TrainResult(model, spec, args, step, records, output_dir, time.perf_counter() - t_start)


def _backward(forward, tokens, accum: int, args: TrainingArguments, device: torch.device, scaler) -> torch.Tensor:
    """Forward and backward of one micro-batch; returns its (detached) share of the step's loss."""
    with _autocast(args, device):
        loss = lm_loss(forward(tokens), tokens) / accum
    (scaler.scale(loss) if scaler is not None else loss).backward()
    return loss.detach()


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


def _summary(latest: dict[str, Any]) -> str:
    parts = []
    for key, label in (("loss", "loss"), ("eval_loss", "eval"), ("icl_score", "icl"), ("repeat_bigram_gap", "gap"),
                       ("induction_score", "ind"), ("prev_token_score", "prev")):
        if key in latest:
            parts.append(f"{label} {latest[key]:.3f}")
    return " ".join(parts)


def _start_metrics(path: Path | None, step: int) -> list[dict]:
    """Records up to `step` (a resumed run drops what the killed run logged after its checkpoint)."""
    if path is None:
        return []
    path.parent.mkdir(parents=True, exist_ok=True)
    from interp.train.metrics import read_metrics

    records = [r for r in read_metrics(path) if r.get("step", 0) <= step] if path.is_file() and step > 0 else []
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in records))
    tmp.replace(path)
    return records
