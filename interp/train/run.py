"""A training run and its setup: `setup(preset, args)` checks everything -- the arguments, the
output folder, the checkpoint to resume, whether a micro-batch fits -- and only then builds the
`Run` (model fresh or resumed, data, optimizer, log) that interp.train.loop steps, evaluates
and saves. Nothing is written before every check has passed."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from interp.errors import WorkbenchError
from interp.io import check_dir_target
from interp.models import Model
from interp.models.device import pick_device
from interp.models.inhouse import NativeSpec, build_native, load_inhouse
from interp.train.args import RESUMABLE_CHANGES, TrainingArguments, lr_lambda
from interp.train.checkpoints import (
    check_output_dir,
    load_training_state,
    prepare_output_dir,
    resolve_resume,
    set_rng_state,
)
from interp.train.data import DataMix, MicroBatches, TokenStream, corpus_token_arrays, heldout_batch, ioi_tokens
from interp.train.distributed import DataParallel
from interp.train.distributed import setup as setup_data_parallel
from interp.train.forward import FastLM, lm_loss
from interp.train.log import MetricsLog
from interp.train.memory import check_fits
from interp.train.metrics import EvalData, make_eval_data
from interp.train.presets import Preset, get_preset
from interp.train.tokenizer import make_tokenizer

N_EVAL_SEQUENCES = 512  # held-out windows scored at each evaluation (fewer if the held-out text is short)
DEFAULT_CORPUS = "kjv"  # the corpus a run records when none was named


@dataclass
class Run:
    """A training run between steps: what `setup` builds, `train_step` advances and `save` writes."""

    args: TrainingArguments  # validated arguments (n_devices as the launcher started them)
    device: torch.device  # where this process trains
    dp: DataParallel | None  # the data-parallel context; None for a single process
    model: Model  # the model being trained
    spec: NativeSpec  # its architecture
    preset: str  # the preset's name (recorded in checkpoints)
    corpus: str  # the corpus spec the data comes from
    mix: DataMix  # the data mix
    forward: Callable  # tokens -> logits for evaluation (the fast forward, or the bridge)
    train_loss: Callable  # tokens -> mean next-token loss, for training (forward and loss torch.compile'd together when asked)
    params: list[torch.nn.Parameter]  # the trained parameters
    optimizer: torch.optim.Optimizer  # AdamW or Adafactor over `params`
    scheduler: torch.optim.lr_scheduler.LambdaLR  # the learning-rate schedule
    scaler: torch.amp.GradScaler | None  # fp16 loss scaling
    batches: MicroBatches  # this process's micro-batches, with the global data position
    eval_data: EvalData | None  # held-out data (on the main process, when eval_steps > 0)
    log: MetricsLog  # the run's records (written to metrics.jsonl by the main process)
    output_dir: Path | None  # where the main process writes checkpoints and metrics.jsonl (None: nowhere)
    step: int = 0  # optimizer steps done
    elapsed_s: float = 0.0  # training time of the run before this call (a resumed run's earlier part)

    @property
    def main(self) -> bool:
        """Only the main process evaluates, logs and writes."""
        return self.dp is None or self.dp.is_main

    @property
    def writes(self) -> bool:
        return self.main and self.output_dir is not None


@dataclass
class _Start:
    """Where a run starts: a fresh model at step 0, or a checkpoint's state."""

    model: Model  # the model to train
    spec: NativeSpec  # its architecture
    preset: str  # the preset's name
    corpus: str | None  # the corpus spec
    mix: DataMix  # the data mix
    step: int = 0  # optimizer steps already done
    position: int = 0  # sequences already consumed
    elapsed_s: float = 0.0  # training time already spent
    saved: dict | None = None  # the checkpoint's optimizer, scheduler, scaler and RNG state


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


def _check_resumable(saved: dict, args: TrainingArguments) -> None:
    old = TrainingArguments.from_dict(saved["args"]).to_dict()
    changed = sorted(k for k, v in args.to_dict().items() if k not in RESUMABLE_CHANGES and old[k] != v)
    if changed:
        raise WorkbenchError(
            f"cannot resume with different {', '.join(changed)} than the checkpoint's run "
            f"({', '.join(f'{k}={old[k]!r}' for k in changed)}); resume with those values, or start a new run"
        )


def _check_same_arch(checkpoint: Path, arch: dict[str, Any] | None) -> None:
    """Refuse architecture overrides that differ from the checkpoint's own (a resume continues the
    saved model, so a changed one would be ignored without a word). vocab_size is the tokenizer's
    target, not always its length, so it is not compared."""
    from interp.models.inhouse import read_inhouse_config

    saved = NativeSpec.from_dict(read_inhouse_config(checkpoint)["architecture"])
    changed = {k: v for k, v in (arch or {}).items() if k != "vocab_size" and getattr(saved, k, v) != v}
    if changed:
        raise WorkbenchError(
            f"cannot resume {checkpoint.name} with a different architecture ("
            + ", ".join(f"{k}={v!r}, the checkpoint has {getattr(saved, k)!r}" for k, v in changed.items())
            + "); drop those --arch overrides to continue the run, or start a new run in another output folder"
        )


def _resumed(checkpoint: Path, args: TrainingArguments, device: torch.device,
             arch: dict[str, Any] | None = None) -> _Start:  # fmt: skip
    saved = load_training_state(checkpoint)
    state = saved["trainer_state"]
    _check_resumable(state, args)
    _check_same_arch(checkpoint, arch)
    model, spec, _ = load_inhouse(checkpoint, device=device)
    return _Start(model, spec, state["preset"], state["corpus"], DataMix(**state["data_mix"]), state["global_step"],
                  state["data_position"], state.get("elapsed_s", 0.0), saved)


def _fresh_spec(preset: Preset, corpus: str | None, arch: dict[str, Any] | None):
    """(preset with `arch` applied, its tokenizer, its spec sized to the tokenizer)."""
    if arch:
        preset = preset.with_overrides(**arch)
    tokenizer = make_tokenizer(preset.tokenizer, corpus, preset.vocab_size)
    spec = replace(preset.spec, d_vocab=len(tokenizer))
    spec.validate()
    return preset, tokenizer, spec


def setup(
    preset: str | Preset = "attn-only-2l",
    args: TrainingArguments | None = None,
    *,
    corpus: str | None = None,
    arch: dict[str, Any] | None = None,
    data: DataMix | None = None,
    use_bridge_forward: bool = False,
) -> Run:
    """The run `train` steps through (arguments as for `train`), after every check has passed."""
    preset = get_preset(preset) if isinstance(preset, str) else preset
    args = (args or training_arguments(preset)).validate()
    output_dir = check_dir_target(args.output_dir, "output_dir") if args.output_dir is not None else None
    device = pick_device(args.device)
    dp = setup_data_parallel(args.n_devices, device)  # None unless launched by torchrun with several processes
    if dp is not None:
        device = dp.device
        args = args.replace(n_devices=dp.world)
    if args.fp16 and device.type != "cuda":
        raise WorkbenchError("fp16 mixed precision needs a CUDA device; use bf16 on CPU")
    checkpoint = resolve_resume(args.resume_from_checkpoint, output_dir)
    if output_dir is not None:
        check_output_dir(output_dir, resuming=checkpoint is not None, overwrite=args.overwrite_output_dir)
    processes = dp.world if dp is not None and device.type == "cpu" else 1  # ranks sharing this memory
    if checkpoint is not None:
        start = _resumed(checkpoint, args, device, arch)
        check_fits(start.spec, args.per_device_train_batch_size, device, processes)
    else:
        preset, tokenizer, spec = _fresh_spec(preset, corpus, arch)
        check_fits(spec, args.per_device_train_batch_size, device, processes)  # before building anything
        start = _Start(build_native(spec, tokenizer, device=device, name=preset.name), spec, preset.name, corpus,
                       data or preset.data)

    main = dp is None or dp.is_main
    model, spec, tokenizer = start.model, start.spec, start.model.tokenizer
    train_tokens, heldout = corpus_token_arrays(start.corpus, tokenizer)
    bos = tokenizer.bos_token_id
    stream = TokenStream(train_tokens, start.mix, spec.n_ctx, spec.d_vocab, bos, args.seed,
                         ioi=ioi_tokens(tokenizer) if start.mix.ioi > 0 else None)
    eval_data = None
    if args.eval_steps and main:
        eval_data = make_eval_data(model, heldout_batch(heldout, spec.n_ctx, N_EVAL_SEQUENCES, bos))

    bridge = model.bridge
    fast = FastLM(bridge, spec).to(device)
    forward = (lambda t: bridge(t)) if use_bridge_forward else fast
    train_loss = _training_loss(forward, args, device, compile_it=args.torch_compile and not use_bridge_forward)
    params = [p for p in bridge.parameters() if p.requires_grad]
    if dp is not None:
        dp.broadcast_parameters(params)
    optimizer = _optimizer(params, args, device)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_lambda(args.lr_scheduler_type, args.warmup_steps, args.max_steps))
    scaler = torch.amp.GradScaler(device.type) if args.fp16 else None
    if start.saved is not None:
        optimizer.load_state_dict(start.saved["optimizer"])
        scheduler.load_state_dict(start.saved["scheduler"])
        if scaler is not None and start.saved["scaler"] is not None:
            scaler.load_state_dict(start.saved["scaler"])
        set_rng_state(start.saved["rng_state"])
    else:
        torch.manual_seed(args.seed)

    writes = output_dir if main else None
    if writes is not None:  # the run's first write: every check above has passed
        prepare_output_dir(writes, overwrite=args.overwrite_output_dir)
    rank, world = (dp.rank, dp.world) if dp is not None else (0, 1)
    return Run(args=args, device=device, dp=dp, model=model, spec=spec, preset=start.preset,
               corpus=start.corpus or DEFAULT_CORPUS, mix=start.mix, forward=forward, train_loss=train_loss,
               params=params, optimizer=optimizer, scheduler=scheduler, scaler=scaler,
               batches=MicroBatches(stream, start.position, args.per_device_train_batch_size, rank, world,
                                   pin=device.type == "cuda"),
               eval_data=eval_data, log=MetricsLog.start(writes, start.step), output_dir=output_dir,
               step=start.step, elapsed_s=start.elapsed_s)


def _training_loss(forward: Callable, args: TrainingArguments, device: torch.device, compile_it: bool) -> Callable:
    """tokens -> the mean next-token loss under the run's autocast. Compiled as one graph (the
    forward, the float32 cross-entropy and, in "reduce-overhead" mode, CUDA graphs over both
    passes), a small model stops being bound by kernel launches."""
    if args.bf16:
        cast = (device.type, torch.bfloat16)
    elif args.fp16:
        cast = (device.type, torch.float16)
    else:
        cast = None

    def loss(tokens: Tensor) -> Tensor:
        if cast is None:
            return lm_loss(forward(tokens), tokens)
        with torch.autocast(cast[0], dtype=cast[1]):
            return lm_loss(forward(tokens), tokens)

    if not compile_it:
        return loss
    mode = None if args.torch_compile_mode in (None, "default") else args.torch_compile_mode
    return torch.compile(loss, mode=mode)


def close(run: Run) -> None:
    """Stop the prefetching thread and leave the process group."""
    run.batches.close()
    if run.dp is not None:
        run.dp.close()
