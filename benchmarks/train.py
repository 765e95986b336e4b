"""Training throughput: our trainer vs TransformerLens's `transformer_lens.tools.training.train`
on the same model (same init), the same sequences and the same batch, in the same run.

TL's loop trains the hooked TransformerBridge in float32 with torch Adam/AdamW. Ours trains a
hook-free forward over the same parameters (interp.train.forward.FastLM, checked equal to the
bridge in tests) and, on CUDA, adds bf16 autocast, fused AdamW and torch.compile.
Both see every sequence once (TL shuffles their order); the held-out loss after training
shows they learn the same.

  .venv/bin/python benchmarks/train.py [--device cuda] [--steps 40] [--preset attn-only-2l]
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


def run_tl(preset, tokenizer, spec, tokens: torch.Tensor, args: TrainingArguments, device: str) -> float:
    """Seconds for TL's train() over `tokens` (one epoch, batch = ours)."""
    from transformer_lens.tools.training import TrainConfig
    from transformer_lens.tools.training import train as tl_train

    bridge = build_native(spec, tokenizer, device=device)
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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--preset", default="attn-only-2l")
    ap.add_argument("--steps", type=int, default=40, help="timed optimizer steps per trainer")
    ap.add_argument("--batch", type=int, default=None, help="per-device batch (default: the preset's)")
    ap.add_argument("--no-compile", action="store_true", help="skip torch.compile on CUDA")
    opts = ap.parse_args(argv)

    preset = get_preset(opts.preset)
    tokenizer = make_tokenizer(preset.tokenizer, None, preset.vocab_size)
    spec = preset.spec.__class__(**{**preset.spec.__dict__, "d_vocab": len(tokenizer)})
    cuda = opts.device.startswith("cuda")
    batch = opts.batch or preset.training.get("per_device_train_batch_size", 8)
    args = TrainingArguments(**{**preset.training, "max_steps": opts.steps, "warmup_steps": 0, "eval_steps": 0,
                                "save_steps": 0, "logging_steps": opts.steps, "lr_scheduler_type": "constant",
                                "per_device_train_batch_size": batch, "device": opts.device, "bf16": cuda,
                                "torch_compile": cuda and not opts.no_compile, "output_dir": None})
    train_tokens, heldout = corpus_token_arrays(None, tokenizer)
    stream = TokenStream(train_tokens, preset.data, spec.n_ctx, spec.d_vocab, tokenizer.bos_token_id, args.seed)
    tokens = stream.batch(0, opts.steps * batch)
    held = heldout_batch(heldout, spec.n_ctx, 16, tokenizer.bos_token_id)
    n_tokens = tokens.numel()

    # warm-up both paths once (allocator, compile) on a few steps, untimed
    train(preset, args.replace(max_steps=3))
    run_tl(preset, tokenizer, spec, tokens[: 4 * batch], args, opts.device)

    tl_s, tl_bridge = run_tl(preset, tokenizer, spec, tokens, args, opts.device)
    ours = train(preset, args)  # the same sequences: stream.batch(0, steps * batch), in order
    ours_s = ours.wall_time_s
    tl_tps, ours_tps = n_tokens / tl_s, n_tokens / ours_s
    device_name = torch.cuda.get_device_name() if cuda else f"CPU ({torch.get_num_threads()} threads)"
    print(f"device: {device_name}; preset {preset.name}: d_model {spec.d_model}, n_ctx {spec.n_ctx}, "
          f"vocab {spec.d_vocab}; batch {batch} x {opts.steps} steps = {n_tokens} tokens")
    print(f"TL tools.training.train : {tl_tps:10.0f} tokens/s  ({tl_s:.2f} s), held-out loss after "
          f"{heldout_loss(tl_bridge, spec, held, opts.device):.4f}")
    extras = "bf16 autocast, fused AdamW" + (", torch.compile" if args.torch_compile else "") if cuda else "fp32"
    print(f"interp.train (fast, {extras}): {ours_tps:10.0f} tokens/s  ({ours_s:.2f} s), held-out loss after "
          f"{heldout_loss(ours.bridge, spec, held, opts.device):.4f}")
    print(f"RESULT train tokens/s ratio ours/TL = {ours_tps / tl_tps:.2f}x on {opts.device}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
