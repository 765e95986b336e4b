"""Load-time and forward-overhead benchmark for smollm2-135m.

1. cold load (GGUF dequantized into a fresh cache folder) vs cached load (safetensors);
2. the bridge's forward pass vs the bare HF model on the same tokens (8 x 128 by default).

    python benchmarks/load.py [--device cpu|cuda] [--batch 8] [--seq 128] [--repeats 5] [--skip-cold]
Prints one line per figure and the overhead ratio (goal: bridge / HF < 1.2).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time

import torch


def _timed(fn, repeats: int, sync) -> list[float]:
    times = []
    for _ in range(repeats):
        sync()
        t = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t)
    return times


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--skip-cold", action="store_true", help="skip the ~30-50 s cold GGUF conversion")
    args = ap.parse_args()

    from interp import load

    results: dict[str, float] = {}
    if not args.skip_cold:
        with tempfile.TemporaryDirectory() as tmp:
            old = os.environ.get("INTERP_CACHE")
            os.environ["INTERP_CACHE"] = tmp
            t = time.perf_counter()
            load("smollm2-135m", device=args.device)
            results["cold_load_s"] = time.perf_counter() - t
            if old is None:
                del os.environ["INTERP_CACHE"]
            else:
                os.environ["INTERP_CACHE"] = old
    load("smollm2-135m", device=args.device)  # make sure the default cache is warm
    t = time.perf_counter()
    model = load("smollm2-135m", device=args.device)
    results["cached_load_s"] = time.perf_counter() - t

    # a separate, un-bridged HF model from the same cached weights (the bridge rewires its own copy)
    from interp.models.load import _bundled_smollm2_folder, _from_pretrained

    hf = _from_pretrained(_bundled_smollm2_folder(), torch.float32).to(model.device)
    tokens = torch.randint(100, 40000, (args.batch, args.seq), generator=torch.Generator().manual_seed(0))
    tokens = tokens.to(model.device)
    sync = torch.cuda.synchronize if model.device.type == "cuda" else (lambda: None)
    with torch.no_grad():
        model(tokens)  # warm-up both paths
        hf(tokens)
        # interleave the two so drift in machine load affects both alike
        bridge_t, hf_t = [], []
        for _ in range(args.repeats):
            bridge_t += _timed(lambda: model(tokens), 1, sync)
            hf_t += _timed(lambda: hf(tokens), 1, sync)
        same = (model(tokens) - hf(tokens).logits).abs().max().item()
    results["bridge_forward_s"] = statistics.median(bridge_t)
    results["hf_forward_s"] = statistics.median(hf_t)
    results["overhead_ratio"] = results["bridge_forward_s"] / results["hf_forward_s"]
    results["max_abs_logit_diff"] = same

    for k, v in results.items():
        print(f"{k:>20}: {v:.4g}")
    verdict = "OK" if results["overhead_ratio"] < 1.2 else "OVER GOAL"
    print(f"bridge/HF forward overhead {results['overhead_ratio']:.3f}x for {args.batch}x{args.seq} tokens "
          f"on {args.device} (goal < 1.2x): {verdict}")
    print("RESULT " + json.dumps({"benchmark": "load", "device": args.device, **results}))


if __name__ == "__main__":
    main()
