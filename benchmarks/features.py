"""Transcoders for every MLP of a model: our trainer beside sparsify's own loop, then the
evaluation and the features-vs-neurons memory comparison, all in one process.

1. ours      interp.features.train on --tokens tokens of the built mixture ("mix"), every layer
             from one forward stream; tokens/s from the training log between its first and last
             records (the first --skip-steps steps, with the compile-free warm-up, left out)
2. sparsify  sparsify.Trainer.fit (eai-sparsify) on the same Hugging Face weights, the same
             windows, k, latents, batch, Adam with the same rate, AuxK weight and dead threshold,
             for --sparsify-steps steps; tokens/s between its step --skip-steps and its last
             (sparsify's own loop: its hooks on the HF modules, its autocast, its decoder)
3. eval      interp.features.evaluate on --eval-tokens held-out tokens ("mix:heldout"): FVU, L0,
             dead/dense, CE recovered and KL with each layer alone and all spliced at once
4. memories  a neuron index and a feature index over the same --index-tokens held-out tokens,
             and interp.features.memories.compare: agreement (p-values) and the same-last-token
             proxy per layer, features beside neurons
Every phase's numbers go to --out (JSON) as soon as the phase ends; a phase that fails is
recorded and the others still run. Peak GPU memory is recorded per phase.

    python benchmarks/features.py --model smollm2-135m --device cuda --tokens 30000000 \\
        --d-sae 9216 --k 64 --batch-tokens 16384 --out features.json
"""

from __future__ import annotations

import argparse
import json
import math
import time
import traceback
from pathlib import Path

import torch


def _peak(device) -> float | None:
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 2**30


def _reset(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def _rate(log: list[dict], skip: int) -> float:
    """Tokens/s between the first log record at or past step `skip` and the last one."""
    rows = [r for r in log if r["step"] >= skip]
    if len(rows) < 2:
        rows = log[-2:] if len(log) >= 2 else log
    if len(rows) < 2:
        return math.nan
    return (rows[-1]["tokens"] - rows[0]["tokens"]) / max(rows[-1]["seconds"] - rows[0]["seconds"], 1e-9)


def _settings(args, n_tokens: int):
    from interp.features import TrainSettings

    return TrainSettings(site="mlp", d_sae=args.d_sae, k=args.k, corpus=args.corpus, n_tokens=n_tokens, seq_len=args.seq_len,
                      batch_tokens=args.batch_tokens, lr=args.lr, dtype=args.dtype, dead_tokens=args.dead_tokens,
                      auxk_alpha=args.auxk_alpha, layer_chunk=args.layer_chunk, warmup_steps=args.warmup,
                      epochs=args.epochs, layers=args.layers, skip=args.skip, decode=args.decode)  # fmt: skip


def probe_rate(model, args) -> float:
    """Tokens/s of our trainer's steps skip_steps..skip_steps+15 of a throwaway run (nothing
    written), to size --train-seconds."""
    from interp.features.train import build, train_step

    t = build(model, _settings(args, min(args.tokens, 4_000_000)).resolved(model))
    t0 = tok0 = None
    for i in range(args.skip_steps + 15):
        if i == args.skip_steps:
            _sync(model.device)
            t0, tok0 = time.perf_counter(), t.state.tokens
        train_step(t)
    _sync(model.device)
    rate = (t.state.tokens - tok0) / (time.perf_counter() - t0)
    del t
    if model.device.type == "cuda":
        torch.cuda.empty_cache()
    return rate


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_ours(model, args, out: Path) -> tuple[dict, object]:
    from interp.features import train

    n_tokens, probe = args.tokens, None
    if args.train_seconds:
        probe = probe_rate(model, args)
        n_tokens = int(min(args.tokens, probe * args.train_seconds))
        print(f"  probe: {probe:,.0f} tok/s -> training on {n_tokens:,} tokens", flush=True)
    s = _settings(args, n_tokens)
    t0 = time.perf_counter()

    def progress(done, total, msg):
        print(f"  ours {done:,}/{total:,} {msg}  ({time.perf_counter() - t0:.0f} s)", flush=True)

    d = train(model, s, out / "dict", progress=progress, log_every=args.log_every)
    meta = json.loads((out / "dict" / "dictionary.json").read_text())["training"]
    return {"seconds": time.perf_counter() - t0, "train_seconds": meta["seconds"], "tokens": meta["tokens"],
            "steps": meta["steps"], "tokens_per_s": _rate(meta["log"], args.skip_steps),
            "dead_fraction_at_end": meta["dead_fraction"], "log": meta["log"], "lr": s.base_lr,
            "probe_tokens_per_s": probe}, d  # fmt: skip


class _Windows(torch.utils.data.Dataset):
    """sparsify's dataset: {"input_ids": window} rows, timing when chosen rows are fetched."""

    def __init__(self, table, marks: dict[int, str], times: dict):
        self.table, self.marks, self.times = table, marks, times

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, i: int) -> dict:
        if i in self.marks:
            self.times[self.marks[i]] = time.perf_counter()
        return {"input_ids": self.table[i].long()}


def hf_folder(model) -> str:
    """The Hugging Face folder the model was loaded from (for the bundled GGUF: its converted cache)."""
    from interp.models.cache import cache_dir

    if Path(model.info.location).is_dir():
        return model.info.location
    found = sorted((cache_dir() / "gguf").glob("*/config.json"), key=lambda p: p.stat().st_mtime)
    return str(found[-1].parent)


def run_sparsify(model, args, out: Path) -> dict:
    """sparsify's own Trainer on the HF weights of `model` (module doc)."""
    from sparsify import SparseCoderConfig, TrainConfig, Trainer
    from transformers import AutoModelForCausalLM

    from interp.features.activations import token_table

    per = args.batch_tokens // args.seq_len
    steps = args.sparsify_steps
    table = token_table(model, args.corpus, args.seq_len, steps * per * (args.seq_len - 1), seed=1)[: steps * per]
    pad = model.tokenizer.pad_token_id or 0
    table = table.masked_fill(table < 0, pad)
    times: dict = {}
    data = _Windows(table, {args.skip_steps * per: "start", (steps - 1) * per: "end"}, times)
    hf = AutoModelForCausalLM.from_pretrained(hf_folder(model), dtype=model.dtype).to(model.device)
    cfg = TrainConfig(SparseCoderConfig(num_latents=args.d_sae, k=args.k, transcode=True, skip_connection=args.skip),
                      batch_size=per, optimizer="adam", lr=args.lr or 2e-4 / math.sqrt(args.d_sae / 2**14),
                      lr_warmup_steps=args.warmup, auxk_alpha=args.auxk_alpha, dead_feature_threshold=args.dead_tokens,
                      hookpoints=[f"layers.{la}.mlp" for la in (args.layers or range(model.info.n_layers))],
                      log_to_wandb=False, save_every=10**9, save_dir=str(out / "sparsify"))  # fmt: skip
    trainer = Trainer(cfg, data, hf)
    trainer.save = lambda: None  # its end-of-run checkpoint (GBs of disk writes) is not part of the loop timed
    t0 = time.perf_counter()
    trainer.fit()
    total = time.perf_counter() - t0
    timed_steps = steps - 1 - args.skip_steps
    rate = timed_steps * per * args.seq_len / (times["end"] - times["start"]) if "end" in times else math.nan
    del hf, trainer
    return {"steps": steps, "seconds": total, "tokens_per_s": rate, "windows_per_step": per,
            "note": "tokens counted as windows x seq_len (sparsify trains on every position, BOS too)"}  # fmt: skip


def run_eval(model, d, args) -> dict:
    from interp.features.evaluate import evaluate

    t0 = time.perf_counter()
    ev = evaluate(model, d, corpus=args.eval_corpus, n_tokens=args.eval_tokens, seq_len=args.seq_len,
                  batch_size=args.eval_batch, ce_tokens=args.ce_tokens)  # fmt: skip
    return {"seconds": time.perf_counter() - t0, **ev.to_dict()}


def run_memories(model, d, args, out: Path) -> dict:
    from interp.features.memories import build_feature_index, compare
    from interp.memories import IndexSettings, build_index

    s = IndexSettings(corpus=args.eval_corpus, n_tokens=args.index_tokens, top_k=25, seq_len=64,
                      n_permutations=args.permutations, layers=args.layers)  # fmt: skip
    t0 = time.perf_counter()
    neurons = build_index(model, s, out / "neurons", batch_size=64)
    t1 = time.perf_counter()
    features = build_feature_index(model, d, s, out / "features", batch_size=64)
    t2 = time.perf_counter()
    return {"neuron_index_s": t1 - t0, "feature_index_s": t2 - t1, "rows": compare(features, neurons),
            "rows_plus": compare(features, neurons, neuron_group="+")}  # fmt: skip


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--device", default=None)
    p.add_argument("--model-dtype", default="float32", help="the model's weights (float32: exact CE numbers)")
    p.add_argument("--dtype", default="bfloat16", help="the dictionaries' matmuls: float32 or bfloat16")
    p.add_argument("--layers", default=None, help="e.g. 0-29 (default all)")
    p.add_argument("--tokens", type=int, default=1_000_000, help="training tokens (at most, with --train-seconds)")
    p.add_argument("--train-seconds", type=float, default=0, help="size the run to this many seconds (probed rate)")
    p.add_argument("--corpus", default="mix", help="training corpus")
    p.add_argument("--eval-corpus", default="mix:heldout", help="evaluation and index corpus")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--d-sae", type=int, default=9216)
    p.add_argument("--k", type=int, default=64)
    p.add_argument("--skip", action="store_true", help="skip transcoders (a linear skip connection beside the latents)")
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--auxk-alpha", type=float, default=1 / 32)
    p.add_argument("--dead-tokens", type=int, default=2_000_000)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--batch-tokens", type=int, default=16384)
    p.add_argument("--layer-chunk", type=int, default=10)
    p.add_argument("--decode", default="sparse", help="training decode: sparse (embedding bag) | dense (a product)")
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--skip-steps", type=int, default=20)
    p.add_argument("--sparsify-steps", type=int, default=0, help="0: skip sparsify's loop")
    p.add_argument("--eval-tokens", type=int, default=65536)
    p.add_argument("--eval-batch", type=int, default=32)
    p.add_argument("--ce-tokens", type=int, default=None, help="splice (CE, KL) on this many of the eval tokens")
    p.add_argument("--index-tokens", type=int, default=0, help="0: skip the memory comparison")
    p.add_argument("--permutations", type=int, default=1000)
    p.add_argument("--phases", default="ours,sparsify,eval,memories")
    p.add_argument("--work", default="/tmp/features-bench")
    p.add_argument("--out", default="features.json")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse(argv)
    from interp import load
    from interp.parse import parse_layers

    args.layers = parse_layers(args.layers)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    model = load(args.model, device=args.device, dtype=args.model_dtype)
    dev = model.device
    result = {"model": model.info.name, "device": str(dev), "gpu": torch.cuda.get_device_name(dev) if dev.type == "cuda"
              else None, "torch": torch.__version__, "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
              "args": vars(args)}  # fmt: skip
    work = Path(args.work)
    phases = args.phases.split(",")
    d = None

    def phase(name, fn):
        _reset(dev)
        try:
            result[name] = fn()
        except Exception as e:  # a failed phase is recorded; the others still run
            result[name] = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-3000:]}
            print(result[name]["traceback"], flush=True)
        if isinstance(result[name], dict):
            result[name]["peak_gib"] = _peak(dev)
        Path(args.out).write_text(json.dumps(result, indent=1, default=str))
        print(f"== {name}: {json.dumps({k: v for k, v in result[name].items() if k not in ('log', 'rows', 'rows_plus', 'layers', 'traceback')}, default=str)[:1500]}", flush=True)

    if "ours" in phases:
        holder = {}

        def ours():
            stats, holder["d"] = run_ours(model, args, work)
            return stats

        phase("ours", ours)
        d = holder.get("d")
    if "sparsify" in phases and args.sparsify_steps:
        phase("sparsify", lambda: run_sparsify(model, args, work))
        if "tokens_per_s" in result.get("ours", {}) and "tokens_per_s" in result["sparsify"]:
            result["ratio_ours_over_sparsify"] = result["ours"]["tokens_per_s"] / result["sparsify"]["tokens_per_s"]
    if d is not None and "eval" in phases:
        phase("eval", lambda: run_eval(model, d, args))
    if d is not None and "memories" in phases and args.index_tokens:
        phase("memories", lambda: run_memories(model, d, args, work))
    Path(args.out).write_text(json.dumps(result, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
