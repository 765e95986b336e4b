"""Head-detection benchmark (default SmolLM2-135M: 30 layers x 9 query heads), three kinds,
16 repeated-token sequences (BOS + 2 x 50 tokens by default), in one run:

1. ours: `interp.heads.head_scores` (one batched forward, patterns scored inside the hooks,
   stopped after the last layer's pattern), with TL's "mul" measure (compared with TL's scores)
   and with the default "target" measure (Olsson's prefix-matching score; TL has no equivalent);
2. TransformerLens `detect_head`, called as a user would: once per prompt per head kind
   (16 x 3 calls, each a forward pass with a full cache);
3. one batched forward pass caching the patterns (`run_with_cache(names_filter=...)`).

    python benchmarks/heads.py [--device cpu|cuda] [--model SPEC] [--dtype float32] [--seqs 16] [--seg-len 50]
Goals: ours at least 8x faster than TL, and at most 1.3x the cached forward pass.
"""

from __future__ import annotations

import argparse
import time

import torch


def timed(fn, repeats: int, sync) -> float:
    best = float("inf")
    for _ in range(repeats):
        sync()
        t = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--model", default="smollm2-135m", help="any spec interp.load accepts")
    ap.add_argument("--dtype", default=None, help="float32 (default), bfloat16, float16")
    ap.add_argument("--seqs", type=int, default=16)
    ap.add_argument("--seg-len", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=3, help="best of N for ours and the cached pass (TL runs once)")
    ap.add_argument("--no-tl", action="store_true", help="skip TL's detect_head (only ours vs the cached pass)")
    args = ap.parse_args()

    import transformer_lens.head_detector as hd

    from interp import load
    from interp.data.synthetic import repeated_tokens
    from interp.heads import head_scores
    from interp.heads.patterns import TL_NAMES

    model = load(args.model, device=args.device, dtype=args.dtype)
    bridge = model.bridge
    tokens = repeated_tokens(model, args.seqs, args.seg_len)
    sync = torch.cuda.synchronize if tokens.device.type == "cuda" else (lambda: None)
    prompts = {f"prompt {i}": tokens[i : i + 1] for i in range(len(tokens))}

    class Prompts:
        """TL reads a prompt string and tokenizes it; hand it our exact token ids instead."""

        cfg = bridge.cfg

        def to_tokens(self, seq):
            return prompts[seq]

        def run_with_cache(self, *a, **kw):
            return bridge.run_with_cache(*a, **kw)

    names = lambda n: n.endswith("attn.hook_pattern")

    @torch.no_grad()
    def cached_pass():
        bridge.run_with_cache(tokens, names_filter=names)

    def ours():
        return head_scores(model, tokens, batch_size=len(tokens), measure="tl-mul")

    def ours_target():
        return head_scores(model, tokens, batch_size=len(tokens))

    tl_scores = {}

    def tl():
        for kind, name in TL_NAMES.items():
            per_prompt = [hd.detect_head(Prompts(), p, name) for p in prompts]
            tl_scores[kind] = torch.stack(per_prompt).mean(0)

    ours(), cached_pass()  # warm-up
    t_ours = timed(ours, args.repeats, sync)
    t_target = timed(ours_target, args.repeats, sync)
    t_cached = timed(cached_pass, args.repeats, sync)
    t_tl = float("nan") if args.no_tl else timed(tl, 1, sync)
    scores = ours()
    diff = float("nan") if args.no_tl else max(float((scores[k].cpu() - tl_scores[k].float().cpu()).abs().max())
                                                 for k in TL_NAMES)
    device = torch.cuda.get_device_name() if tokens.device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    i = model.info
    print(f"{i.name} ({model.dtype}) on {device}; {args.seqs} sequences of BOS + 2 x {args.seg_len} tokens; "
          f"{i.n_layers} x {i.n_heads} heads x 3 kinds")
    print(f"ours (head_scores, one batched pass, TL's mul): {t_ours:.3f} s")
    print(f"ours, default target measure: {t_target:.3f} s ({t_target / t_ours:.2f}x the mul pass)")
    print(f"one batched forward caching patterns: {t_cached:.3f} s")
    print(f"TL detect_head, {len(prompts)} prompts x 3 kinds: {t_tl:.3f} s")
    print(f"max |ours (mul) - TL| over all heads and kinds: {diff:.2e}")
    print(f"RESULT heads: {t_tl / t_ours:.1f}x faster than TL detect_head (goal >= 8x); "
          f"ours / cached forward = {t_ours / t_cached:.2f} (goal <= 1.3)")


if __name__ == "__main__":
    main()
