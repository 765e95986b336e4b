"""Training throughput: our trainer vs TransformerLens's `transformer_lens.tools.training.train`
on the same model (same init), the same sequences and the same batch, in the same run.

TL's loop trains the hooked TransformerBridge in float32 with torch Adam/AdamW. Ours trains a
hook-free forward over the same parameters (interp.train.forward.FastLM, checked equal to the
bridge in tests) and, on CUDA, adds bf16 autocast, fused AdamW and torch.compile.
Both see every sequence once (TL shuffles their order); the held-out loss after training
shows they learn the same.

  .venv/bin/python benchmarks/train.py [--device cuda] [--steps 40] [--preset attn-only-2l]

`--phase-change DIR [--batch 64] [--max-steps N]` instead trains attn-only-1l and attn-only-2l
(Olsson et al. 2022's comparison), finds the steps where 2L's best induction head score jumps,
prints how the in-context-learning score and the repeated-bigram gap change across those steps in
both models, and writes DIR/phase_change.html.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from interp.models.inhouse import build_native  # noqa: E402
from interp.train import TrainingArguments, get_preset, train  # noqa: E402
from interp.train.data import TokenStream, corpus_token_arrays, heldout_batch  # noqa: E402
from interp.train.forward import FastLM, lm_loss  # noqa: E402
from interp.train.tokenizer import make_tokenizer  # noqa: E402


class Sequences(torch.utils.data.Dataset):
    def __init__(self, tokens: torch.Tensor):
        self.tokens = tokens

    def __len__(self) -> int:
        return len(self.tokens)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"tokens": self.tokens[i]}


@torch.no_grad()
def heldout_loss(bridge, spec, tokens: torch.Tensor, device: str) -> float:
    fast = FastLM(bridge, spec).to(device)
    return float(lm_loss(fast(tokens.to(device)), tokens.to(device)))


def run_tl(preset, tokenizer, spec, tokens: torch.Tensor, args: TrainingArguments, device: str):
    """(seconds, trained bridge) for TL's train() over `tokens` (one epoch, batch = ours)."""
    from transformer_lens.tools.training import TrainConfig
    from transformer_lens.tools.training import train as tl_train

    bridge = build_native(spec, tokenizer, device=device).bridge
    steps = len(tokens) // args.per_device_train_batch_size
    config = TrainConfig(num_epochs=1, batch_size=args.per_device_train_batch_size, lr=args.learning_rate,
                         seed=args.seed, optimizer_name="AdamW", weight_decay=args.weight_decay,
                         max_grad_norm=args.max_grad_norm, device=device, print_every=None,
                         max_steps=steps - 1)  # TL breaks after step index >= max_steps
    sync(device)
    t = time.perf_counter()
    tl_train(bridge, config, Sequences(tokens))
    sync(device)
    return time.perf_counter() - t, bridge


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def phase_change_evidence(out: Path, device: str, max_steps: int | None, batch: int | None) -> int:
    from interp.dynamics import INDUCTION_FORMED, compare_across, induction_window
    from interp.train import read_metrics, training_arguments
    from interp.viz.html import write_figure
    from interp.viz.train import phase_change

    runs = {}
    for name in ("attn-only-1l", "attn-only-2l"):
        knobs = dict(output_dir=str(out / name), overwrite_output_dir=True,  # a rerun replaces the earlier runs
                     device=device, bf16=device.startswith("cuda"))
        if max_steps:
            knobs["max_steps"] = max_steps
        if batch:
            knobs["per_device_train_batch_size"] = batch
        t = time.perf_counter()
        result = train(name, training_arguments(name, **knobs), progress_bar=True)
        wall = time.perf_counter() - t
        runs[name] = [r for r in read_metrics(out / name) if "induction_score" in r]
        ind = [r["induction_score"] for r in runs[name]]
        print(f"{name}: {result.global_step} steps in {wall:.0f} s on {device}; induction score {ind[0]:.3f} -> "
              f"max {max(ind):.3f}; final held-out loss {runs[name][-1]['eval_loss']:.3f}")
    two = runs["attn-only-2l"]
    window = induction_window(two)
    if window is None:
        print(f"RESULT phase change: attn-only-2l's induction score never reached {INDUCTION_FORMED}: no induction "
              "head formed in this run (train longer: --max-steps)")
        return 0
    for row in compare_across(runs, window):
        for key in ("icl_score", "repeat_bigram_gap"):
            if row[f"{key} change"] is None:
                print(f"{row['run']} {key}: no evaluations on both sides of the window")
                continue
            print(f"{row['run']} {key} across the 2L induction window {window} (+-{row['span']} steps): "
                  f"{row[f'{key} before']:+.3f} -> {row[f'{key} after']:+.3f} ({row[f'{key} change']:+.3f} nats)")
    fig = phase_change(runs, window=window)
    write_figure(fig, out / "phase_change.html")
    print(f"RESULT phase change: attn-only-2l induction window {window}; plot {out / 'phase_change.html'}")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--preset", default="attn-only-2l")
    ap.add_argument("--steps", type=int, default=40, help="timed optimizer steps per trainer")
    ap.add_argument("--batch", type=int, default=None, help="per-device batch (default: the preset's)")
    ap.add_argument("--no-compile", action="store_true", help="skip torch.compile on CUDA")
    ap.add_argument("--compile-mode", default="reduce-overhead",
                    help="torch_compile_mode on CUDA (default reduce-overhead: CUDA graphs; or default, max-autotune)")
    ap.add_argument("--phase-change", metavar="DIR", help="train attn-only-1l and -2l into DIR and report the windows")
    ap.add_argument("--max-steps", type=int, default=None, help="with --phase-change: override the presets' steps")
    opts = ap.parse_args(argv)
    if opts.phase_change:
        return phase_change_evidence(Path(opts.phase_change), opts.device, opts.max_steps, opts.batch)

    preset = get_preset(opts.preset)
    tokenizer = make_tokenizer(preset.tokenizer, None, preset.vocab_size)
    spec = preset.spec.__class__(**{**preset.spec.__dict__, "d_vocab": len(tokenizer)})
    cuda = opts.device.startswith("cuda")
    batch = opts.batch or preset.training.get("per_device_train_batch_size", 8)
    args = TrainingArguments(**{**preset.training, "max_steps": opts.steps, "warmup_steps": 0, "eval_steps": 0,
                                "save_steps": 0, "logging_steps": opts.steps, "lr_scheduler_type": "constant",
                                "per_device_train_batch_size": batch, "device": opts.device, "bf16": cuda,
                                "torch_compile": cuda and not opts.no_compile,
                                "torch_compile_mode": opts.compile_mode if cuda else None, "output_dir": None})
    train_tokens, heldout = corpus_token_arrays(None, tokenizer)
    stream = TokenStream(train_tokens, preset.data, spec.n_ctx, spec.d_vocab, tokenizer.bos_token_id, args.seed)
    warm = 5  # untimed first steps of our run (torch.compile, allocator)
    tokens = stream.batch(0, (warm + opts.steps) * batch)  # exactly the sequences our run consumes, in order
    held = heldout_batch(heldout, spec.n_ctx, 16, tokenizer.bos_token_id)

    run_tl(preset, tokenizer, spec, tokens[: 4 * batch], args, opts.device)  # TL warm-up, untimed
    tl_s, tl_bridge = run_tl(preset, tokenizer, spec, tokens, args, opts.device)
    tl_tokens = tokens.numel()

    marks: dict[int, float] = {}

    def clock(step: int, total: int, message: str) -> None:
        if step in (warm, warm + opts.steps):
            sync(opts.device)
            marks[step] = time.perf_counter()

    ours = train(preset, args.replace(max_steps=warm + opts.steps), progress=clock)
    ours_s = marks[warm + opts.steps] - marks[warm]
    n_tokens = opts.steps * batch * spec.n_ctx
    tl_tps, ours_tps = tl_tokens / tl_s, n_tokens / ours_s
    device_name = torch.cuda.get_device_name() if cuda else f"CPU ({torch.get_num_threads()} threads)"
    print(f"device: {device_name}; preset {preset.name}: d_model {spec.d_model}, n_ctx {spec.n_ctx}, "
          f"vocab {spec.d_vocab}; batch {batch}; TL timed over {warm + opts.steps} steps, ours over steps "
          f"{warm + 1}..{warm + opts.steps} (same sequences, both trained on all {warm + opts.steps} steps)")
    print(f"TL tools.training.train : {tl_tps:10.0f} tokens/s  ({tl_s:.2f} s), held-out loss after "
          f"{heldout_loss(tl_bridge, spec, held, opts.device):.4f}")
    extras = ("bf16 autocast, fused AdamW" + (f", torch.compile ({args.torch_compile_mode})" if args.torch_compile else "")
              if cuda else "fp32")
    print(f"interp.train (fast, {extras}): {ours_tps:10.0f} tokens/s  ({ours_s:.2f} s), held-out loss after "
          f"{heldout_loss(ours.model.bridge, spec, held, opts.device):.4f}")
    print(f"RESULT train tokens/s ratio ours/TL = {ours_tps / tl_tps:.2f}x on {opts.device}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
