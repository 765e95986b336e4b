"""FFN-memory indexing throughput on SmolLM2-135M, all 30 layers, vs a bare forward pass.

Both sides run the same KJV token windows in the same batches in the same process, timed batch
by batch in alternation (forward, indexing, forward, ...):
  forward   model.bridge(tokens) -- the full forward pass with logits, no hooks
  indexing  interp.memories.build.stream_keys -- hooks on all 30 layers' hook_post fold every
            coefficient into the running top-k on the device (the work build_index does per batch)
  per-layer the same indexing with one merge per layer as it happens (KeyCollector(stacked=False),
            the CPU default) -- on CUDA the default stacks the 30 layers' merges into one after the pass
Then (unless --no-build) one end-to-end build_index over the same number of tokens (corpus
tokenization, shards written, 30 layers' values projected, agreement) and its agreement by layer.

    python benchmarks/memories.py [--device cpu|cuda] [--tokens 4096] [--batch 8] [--seq 128]
                                  [--repeats 3] [--dtype float32|bfloat16] [--no-build] [--json]
Goal: indexing / forward <= 1.25. The ratio compares, batch by batch, the fastest of the repeats
(on a shared machine interference only adds time); per-repeat ratios are printed too.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default=None, help="float32 (CPU default) or bfloat16/float16")
    ap.add_argument("--tokens", type=int, default=4096, help="tokens per timed pass")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--top-k", type=int, default=25)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--build-tokens", type=int, default=None, help="tokens for the end-to-end build (default --tokens)")
    ap.add_argument("--no-build", action="store_true", help="skip the end-to-end build_index")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    from interp import load
    from interp.data.corpus import open_corpus, windows
    from interp.memories import IndexSettings, build_index
    from interp.memories.build import stream_keys, window_table
    from interp.memories.keys import KeyCollector

    model = load("smollm2-135m", device=args.device, dtype=args.dtype)
    info = model.info
    layers = list(range(info.n_layers))
    table = window_table(
        list(windows(open_corpus("kjv"), model.tokenizer, args.seq, 0, args.tokens, model.bos_token_id)), args.seq
    )
    n_tok = int((table >= 0).sum())
    cuda = model.device.type == "cuda"

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    batches = [(lo, table[lo : lo + args.batch]) for lo in range(0, len(table), args.batch)]

    @torch.no_grad()
    def forward(batch) -> None:
        model.bridge(batch.long().clamp(min=0).to(model.device))

    def index(collector, lo, batch) -> None:
        stream_keys(model, collector, batch, lo, args.batch, model.bos_token_id is not None)

    def timed(fn, *a) -> float:
        sync()
        t = time.perf_counter()
        fn(*a)
        sync()
        return time.perf_counter() - t

    # warm-up, then batch-by-batch pairs (forward, indexing) so that load changes on a shared
    # machine hit both sides alike; the collector runs over the whole corpus as in build_index
    def collector(stacked=None):
        return KeyCollector(layers, info.d_mlp, args.top_k, device=model.device, stacked=stacked)

    forward(batches[0][1]), index(collector(), *batches[0]), index(collector(False), *batches[0])
    per_fwd, per_idx, per_plain = [], [], []  # [repeat][batch] seconds
    for _ in range(args.repeats):
        default, plain = collector(), collector(False)
        for runs in (per_fwd, per_idx, per_plain):
            runs.append([])
        for lo, batch in batches:
            per_fwd[-1].append(timed(forward, batch))
            per_idx[-1].append(timed(index, default, lo, batch))
            per_plain[-1].append(timed(index, plain, lo, batch))
    t_fwd, t_idx = [sum(r) for r in per_fwd], [sum(r) for r in per_idx]
    # the estimate: each batch's fastest repeat (interference only ever adds time), summed
    fwd = sum(min(col) for col in zip(*per_fwd))
    idx = sum(min(col) for col in zip(*per_idx))
    plain_s = sum(min(col) for col in zip(*per_plain))
    result = {
        "device": str(model.device) + (f" ({torch.cuda.get_device_name()})" if cuda else ""),
        "dtype": str(model.dtype),
        "tokens": n_tok,
        "batch": args.batch,
        "seq": args.seq,
        "layers": len(layers),
        "forward_tok_s": n_tok / fwd,
        "indexing_tok_s": n_tok / idx,
        "ratio": idx / fwd,
        "ratio_per_repeat": [i / f for f, i in zip(t_fwd, t_idx)],
        "ratio_of_medians": statistics.median(t_idx) / statistics.median(t_fwd),
        "stacked_merges": default.stacked,
        "per_layer_merge_ratio": plain_s / fwd,
    }
    print(f"forward  {n_tok} tokens: {fwd:.3f} s (sum of per-batch best)  ({n_tok / fwd:,.0f} tok/s)  "
          f"runs {[round(t, 3) for t in t_fwd]}")  # fmt: skip
    print(f"indexing {n_tok} tokens, {len(layers)} layers, top-{args.top_k}: {idx:.3f} s  "
          f"({n_tok / idx:,.0f} tok/s)  runs {[round(t, 3) for t in t_idx]}")  # fmt: skip
    print(f"per-repeat ratios {[round(r, 3) for r in result['ratio_per_repeat']]}, "
          f"ratio of medians {result['ratio_of_medians']:.3f}")  # fmt: skip
    print(f"indexing with one merge per layer (stacked=False): {plain_s:.3f} s, {plain_s / fwd:.3f}x the forward; "
          f"default collector stacked={default.stacked}")
    print(f"RESULT memories indexing/forward = {idx / fwd:.3f} (goal <= 1.25) on {result['device']}, {result['dtype']}")

    if not args.no_build:
        n_build = args.build_tokens or args.tokens
        with tempfile.TemporaryDirectory() as tmp:
            stages: dict[str, float] = {}
            clock = {"t": time.perf_counter(), "stage": "indexing keys"}

            def progress(done: int, total: int, message: str) -> None:
                stage = "indexing keys" if message.startswith("indexing") else "values + agreement + writing"
                if stage != clock["stage"]:
                    now = time.perf_counter()
                    stages[clock["stage"]] = now - clock["t"]
                    clock.update(t=now, stage=stage)

            t = time.perf_counter()
            settings = IndexSettings(layers=layers, n_tokens=n_build, top_k=args.top_k, seq_len=args.seq)
            built = build_index(model, settings, f"{tmp}/idx", batch_size=args.batch, progress=progress)
            total = time.perf_counter() - t
            stages[clock["stage"]] = time.perf_counter() - clock["t"]
            rows = built.agreement()
        print(f"build_index end to end: {n_build} tokens in {total:.1f} s ({n_build / total:,.0f} tok/s); "
              + ", ".join(f"{k} {v:.1f} s" for k, v in stages.items()))  # fmt: skip
        print(f"{'layer':>5} {'agree':>6} {'random':>6} {'any':>6} {'random':>6} {'hit@20':>7} {'random':>6} "
              f"{'sameLast':>8} {'random':>6} {'sameBigr':>8} {'active':>6}")  # fmt: skip
        for r in rows:
            print(f"{r['layer']:>5} {r['agreement']:6.3f} {r['agreement_baseline']:6.3f} {r['agreement_any']:6.3f} "
                  f"{r['agreement_any_baseline']:6.3f} {r['hit_rate']:7.4f} {r['hit_rate_baseline']:6.4f} "
                  f"{r['same_last']:8.3f} {r['same_last_baseline']:6.3f} {r['same_bigram']:8.3f} {r['active_fraction']:6.3f}")  # fmt: skip
        result.update(build_seconds=total, build_tokens=n_build, build_stages=stages, agreement=rows)
    if args.json:
        print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
