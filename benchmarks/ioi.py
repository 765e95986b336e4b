"""Path patching on SmolLM2-135M (270 heads): fast batched vs the plain one-pass-per-sender loop.

Same prompts, same run: every sender head to the logits, and every sender head to a set of
receivers (name-mover queries at END; S-inhibition keys/values at S2). The reference loop is
timed on --reference-senders heads (default: all) and its per-sender time scaled to 270; the
two must agree to 1e-4 on the heads both ran. Then the whole `interp ioi` wall time.

    .venv/bin/python benchmarks/ioi.py [--device cpu|cuda] [--n-prompts 16] [--reference-senders N]
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time

import torch

from interp import load
from interp.circuits.path import Receivers, all_heads, path_patch
from interp.circuits.path_reference import path_patch_reference
from interp.cli import main as cli
from interp.data.ioi import make_ioi

RECEIVER_SETS = {
    "mover queries @END (23.0, 23.2 name movers; 23.3 S suppression)": Receivers(
        [(23, 0), (23, 2), (23, 3)], "q", "END"
    ),
    "s-inhibition keys+values @S2": Receivers([(20, 0), (19, 2)], "kv", "S2"),
}


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def bench(model, ds, receivers, n_ref: int, device: str, label: str) -> None:
    senders = all_heads(model)
    path_patch(model, ds, senders[:9], receivers)  # warm-up
    _sync(device)
    t = time.perf_counter()
    fast = path_patch(model, ds, senders, receivers)
    _sync(device)
    t_fast = time.perf_counter() - t
    sub = senders if n_ref >= len(senders) else sorted(random.Random(0).sample(senders, n_ref))
    t = time.perf_counter()
    ref = path_patch_reference(model, ds, sub, receivers)
    _sync(device)
    t_ref = (time.perf_counter() - t) * len(senders) / len(sub)
    rows = torch.tensor([senders.index(h) for h in sub])
    err = float((fast.patched[rows] - ref.patched).abs().max())
    scaled = "" if len(sub) == len(senders) else f" (measured on {len(sub)} senders, scaled to {len(senders)})"
    print(
        f"{label:<32} fast {t_fast:8.2f}s   reference {t_ref:9.2f}s{scaled}   "
        f"speedup {t_ref / t_fast:6.1f}x   max |diff| {err:.2e} ({'identical' if err < 1e-4 else 'MISMATCH'})"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--n-prompts", type=int, default=16)
    p.add_argument("--reference-senders", type=int, default=270, help="senders the slow loop runs (scaled to all)")
    p.add_argument("--skip-cli", action="store_true", help="skip timing the whole `interp ioi`")
    args = p.parse_args()
    torch.set_grad_enabled(False)
    model = load("smollm2-135m", device=args.device)
    ds = make_ioi(model, args.n_prompts, seed=0)
    print(f"SmolLM2-135M on {args.device}, {len(ds)} prompts, {torch.get_num_threads()} threads")
    bench(model, ds, None, args.reference_senders, args.device, "every head -> logits")
    for label, receivers in RECEIVER_SETS.items():
        bench(model, ds, receivers, args.reference_senders, args.device, f"every head -> {label}")
    if not args.skip_cli:
        with tempfile.TemporaryDirectory() as out:
            t = time.perf_counter()
            rc = cli(["ioi", "--model", "smollm2-135m", "--n-prompts", "24", "--device", args.device, "--out", out])
            print(
                f"interp ioi --n-prompts 24 (24 held out, with checks): {time.perf_counter() - t:.1f}s wall (rc {rc})"
            )


if __name__ == "__main__":
    main()
