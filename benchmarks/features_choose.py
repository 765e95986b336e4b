"""Choosing the transcoders' headline settings on validation text, before any held-out figure.

Each candidate (plain or skip transcoder, a multiple of the default learning rate) trains on the
same --tokens tokens of the training split ("mix") for every layer, and is scored on validation
windows: documents of the training split that no candidate trains on, in a token store of their
own (--val-cache: a cache folder whose mixture's "heldout" split holds them; the real held-out
split is never read). The rule, fixed before the run: the candidate with the lowest mean FVU over
the layers among those with at most 1% dead latents; ties within 0.005 go to the simpler one
(plain before skip, the default rate before others).

    python benchmarks/features_choose.py --device cuda --val-cache /tmp/cacheV --tokens 4000000 \\
        --candidates plain:1,skip:1,plain:3,skip:3 --out choose.json
"""

from __future__ import annotations

import argparse
import json
import os
import time
from contextlib import contextmanager
from pathlib import Path

import torch


@contextmanager
def cache_root(path: str):
    """INTERP_CACHE pointed at `path` while inside (the corpus readers look it up on each call)."""
    old = os.environ.get("INTERP_CACHE")
    os.environ["INTERP_CACHE"] = path
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("INTERP_CACHE", None)
        else:
            os.environ["INTERP_CACHE"] = old


def choose(rows: list[dict], max_dead: float = 0.01, tie: float = 0.005) -> dict | None:
    """The rule of the module doc over rows {name, skip, lr_mult, fvu, dead} in simplicity order."""
    ok = [r for r in rows if r.get("dead", 1.0) <= max_dead and "fvu" in r]
    if not ok:
        return None
    best = min(r["fvu"] for r in ok)
    return next(r for r in ok if r["fvu"] <= best + tie)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--device", default=None)
    p.add_argument("--val-cache", required=True, help="cache folder whose mixture 'heldout' split is the validation text")
    p.add_argument("--candidates", default="plain:1,skip:1,plain:3,skip:3", help="KIND:LR_MULTIPLE, simplest first")
    p.add_argument("--tokens", type=int, default=4_000_000)
    p.add_argument("--val-tokens", type=int, default=65536)
    p.add_argument("--d-sae", type=int, default=9216)
    p.add_argument("--k", type=int, default=64)
    p.add_argument("--batch-tokens", type=int, default=16384)
    p.add_argument("--layer-chunk", type=int, default=10)
    p.add_argument("--model-dtype", default="float32")
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--dead-tokens", type=int, default=2_000_000)
    p.add_argument("--work", default="/tmp/features-choose")
    p.add_argument("--out", default="features_choose.json")
    args = p.parse_args(argv)

    from interp import load
    from interp.features import TrainSettings, train
    from interp.features.evaluate import evaluate

    torch.backends.cuda.matmul.allow_tf32 = True
    model = load(args.model, device=args.device, dtype=args.model_dtype)
    result = {"device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu", "torch": torch.__version__,
              "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()), "args": vars(args), "rows": []}  # fmt: skip
    for cand in args.candidates.split(","):
        kind, mult = cand.split(":")
        s = TrainSettings(site="mlp", d_sae=args.d_sae, k=args.k, skip=kind == "skip", corpus="mix",
                          n_tokens=args.tokens, batch_tokens=args.batch_tokens, dtype=args.dtype,
                          layer_chunk=args.layer_chunk, warmup_steps=100, dead_tokens=args.dead_tokens)  # fmt: skip
        s.lr = s.base_lr * float(mult)
        t0 = time.perf_counter()
        d = train(model, s, Path(args.work) / cand.replace(":", "_"), log_every=50)
        t1 = time.perf_counter()
        with cache_root(args.val_cache):
            ev = evaluate(model, d, corpus="mix:heldout", n_tokens=args.val_tokens, batch_size=32, splice=[],
                          all_at_once=False)  # fmt: skip
        layers = ev.layers
        row = {"name": cand, "skip": kind == "skip", "lr_mult": float(mult), "lr": s.lr, "train_s": t1 - t0,
               "eval_s": time.perf_counter() - t1, "fvu": sum(r.fvu for r in layers) / len(layers),
               "dead": sum(r.dead for r in layers) / len(layers), "fvu_per_layer": [r.fvu for r in layers],
               "dead_per_layer": [r.dead for r in layers], "val_tokens": ev.n_tokens}  # fmt: skip
        result["rows"].append(row)
        print(json.dumps({k: v for k, v in row.items() if not k.endswith("per_layer")}), flush=True)
        Path(args.out).write_text(json.dumps(result, indent=1))
        del d
        if model.device.type == "cuda":
            torch.cuda.empty_cache()
    result["chosen"] = (choose(result["rows"]) or {}).get("name")
    print("chosen:", result["chosen"], flush=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
