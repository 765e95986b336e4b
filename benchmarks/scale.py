"""The fast paths at scale: random-weight Llama-shaped models (benchmarks/shapes.py) built on the
device, each workload timed beside its baseline in the same run, with peak device memory.

    python benchmarks/scale.py --device cuda [--shapes 135m,1.7b,8b] [--dtype bf16,fp32] [--growth]
        [--budget-s 480] [--out scale.json] [--markdown scale.md]   # one GPU run: tables to paste
    python benchmarks/scale.py --quick --device cpu --dtype fp32 --growth   # smoke run, tiny shape (seconds)
    python benchmarks/scale.py --device cuda --growth-only     # only how cost grows with layers, heads, length

Past --budget-s seconds no new shape starts (bf16 shapes first, then growth, then fp32); what was
skipped is listed under the tables. The EAP-IG row times benchmarks/circuits.py's `eap_ig_workload`.

Workloads per shape (time ours / baseline = the ratio; peak memory is the device's high-water mark
during the workload, the model's weights included):
  heads     interp.heads.head_scores (every head, three kinds, 16 x (1 + 2 x 50) tokens, TL's "mul"
            measure so the two compute the same numbers) vs TL's detect_head once per prompt and kind,
            and vs one forward pass caching the patterns
  path      interp.circuits.path_patch, every sender head to the logits and to one receiver set (two
            query heads at 3/4 depth, keys and values at S2: on GQA models the KV path), 16 IOI prompts,
            vs the plainly written per-sender loop (path_patch_reference) timed on a few senders and scaled
            to all of them. Accuracy: the fast path in the timed dtype against the float32 reference on
            the same senders (max abs difference, and relative to the largest effect)
  memories  stream_keys over every layer (both signs where the index has them) vs a bare forward pass
  eap-ig    interp.circuits edge attribution with m steps vs m x (one forward + one backward)

Growth: for the 135m family, the time and peak memory of heads, path patching and memory indexing
at three values each of layers, heads (d_model grows with them) and prompt length, and the
exponent b of time ~ x^b fitted on the three points.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from shapes import SHAPES, build, n_params  # noqa: E402


def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device, repeats: int = 1):
    """(best seconds of `repeats`, the last result)."""
    best, out = float("inf"), None
    for _ in range(repeats):
        sync(device)
        t = time.perf_counter()
        out = fn()
        sync(device)
        best = min(best, time.perf_counter() - t)
    return best, out


class Peak:
    """Peak device memory (GiB) over a block; on the CPU, None."""

    def __init__(self, device):
        self.cuda = torch.device(device).type == "cuda"
        self.gib = None

    def __enter__(self):
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        return self

    def __exit__(self, *exc):
        if self.cuda:
            torch.cuda.synchronize()
            self.gib = torch.cuda.max_memory_allocated() / 2**30


# -- workloads -----------------------------------------------------------------------------------


def heads_workload(model, n_seqs: int = 16, seg_len: int = 50, tl: bool = True) -> dict:
    import transformer_lens.head_detector as hd

    from interp.data.synthetic import repeated_tokens
    from interp.heads import head_scores
    from interp.heads.patterns import TL_NAMES

    dev = model.device
    tokens = repeated_tokens(model, n_seqs, seg_len)
    measure = {"measure": "tl-mul"} if "measure" in head_scores.__code__.co_varnames else {}

    def ours():
        return head_scores(model, tokens, batch_size=n_seqs, **measure)

    @torch.no_grad()
    def cached():
        model.bridge.run_with_cache(tokens, names_filter=lambda n: n.endswith("attn.hook_pattern"))

    ours(), cached()  # warm-up
    with Peak(dev) as peak:
        t_ours, scores = timed(ours, dev, 3)
    with Peak(dev) as base_peak:
        t_cached, _ = timed(cached, dev, 3)
    row = {"ours_s": t_ours, "cached_forward_s": t_cached, "vs_forward": t_ours / t_cached, "peak_gib": peak.gib,
           "baseline_peak_gib": base_peak.gib}
    if tl:
        prompts = {f"p{i}": tokens[i : i + 1] for i in range(n_seqs)}
        bridge = model.bridge

        class Prompts:  # TL tokenizes a prompt string: hand it our exact ids
            cfg = bridge.cfg

            def to_tokens(self, seq):
                return prompts[seq]

            def run_with_cache(self, *a, **kw):
                return bridge.run_with_cache(*a, **kw)

        tl_scores = {}

        def baseline():
            for kind, tl_name in TL_NAMES.items():
                tl_scores[kind] = torch.stack([hd.detect_head(Prompts(), p, tl_name) for p in prompts]).mean(0)

        t_tl, _ = timed(baseline, dev, 1)
        diff = max(float((scores[k].cpu() - tl_scores[k].float().cpu()).abs().max()) for k in TL_NAMES)
        row |= {"tl_detect_head_s": t_tl, "vs_tl": t_tl / t_ours, "max_abs_diff_vs_tl": diff}
    return row


def _ioi(model, n_prompts: int):
    from interp.data.ioi import make_ioi

    return make_ioi(model, n_prompts, seed=0)


def path_workload(model, n_prompts: int = 16, n_reference: int = 4, reference_model=None,
                  targets=("logits", "kv@S2")) -> dict:
    """Fast path patching (every sender) vs the per-sender reference on a sample, to the logits and
    to a k/v receiver set. `reference_model`: a float32 copy for the accuracy check (default: model)."""
    from interp.circuits.path import Receivers, all_heads, path_patch
    from interp.circuits.path_reference import path_patch_reference

    dev = model.device
    ds = _ioi(model, n_prompts)
    ref_ds = ds if reference_model is None else _ioi(reference_model, n_prompts)
    senders = all_heads(model)
    sample = senders[:: max(1, len(senders) // n_reference)][:n_reference]
    L = model.info.n_layers
    layer = (3 * L) // 4
    receivers_of = {"logits": None, "kv@S2": Receivers([(layer, 0), (layer, 1)], "kv", "S2")}
    out = {}
    for name in targets:
        receivers = receivers_of[name]
        chosen = senders if receivers is None else [h for h in senders if h[0] < layer]
        ref_sample = [h for h in sample if receivers is None or h[0] < layer] or chosen[:1]
        path_patch(model, ds, chosen[:2], receivers)  # warm-up
        with Peak(dev) as peak:
            t_fast, fast = timed(lambda: path_patch(model, ds, chosen, receivers), dev)
        with Peak(dev) as base_peak:
            t_ref, ref = timed(lambda: path_patch_reference(reference_model or model, ref_ds, ref_sample, receivers), dev)
        per_sender = t_ref / len(ref_sample)
        idx = [chosen.index(h) for h in ref_sample]
        err = float((fast.patched[idx].float() - ref.patched.float()).abs().max())
        true_effect = ref.patched.float() - ref.clean.float()[None]
        effect = float(true_effect.abs().max())
        # effects (patched - clean), which a low-precision clean run's own offset does not enter
        fast_effect = fast.patched[idx].float() - fast.clean.float()[None]
        effect_err = float((fast_effect - true_effect).abs().max())
        row = {"senders": len(chosen), "fast_s": t_fast, "reference_per_sender_s": per_sender,
               "reference_scaled_s": per_sender * len(chosen), "vs_loop": per_sender * len(chosen) / t_fast,
               "max_abs_diff": err, "largest_effect": effect, "diff_over_effect": err / max(effect, 1e-12),
               "effect_err": effect_err, "effect_err_over_effect": effect_err / max(effect, 1e-12),
               "peak_gib": peak.gib, "baseline_peak_gib": base_peak.gib}
        if reference_model is not None:  # the same reference loop in the timed dtype: bf16's own error
            low = path_patch_reference(model, ds, ref_sample, receivers)
            low_effect = low.patched.float() - low.clean.float()[None]
            row["reference_effect_err"] = float((low_effect - true_effect).abs().max())
            row["reference_effect_err_over_effect"] = row["reference_effect_err"] / max(effect, 1e-12)
        out[name] = row
    return out


def memories_workload(model, n_tokens: int = 16384, batch: int = 32, seq: int = 128) -> dict:
    from interp.memories.build import stream_keys
    from interp.memories.collector import KeyCollector

    dev = model.device
    g = torch.Generator().manual_seed(0)
    n = max(batch, n_tokens // seq)
    table = torch.randint(100, model.info.d_vocab - 100, (n, seq), generator=g, dtype=torch.int32)
    layers = list(range(model.info.n_layers))

    def index():
        collector = KeyCollector(layers, model.info.d_mlp, 25, device=dev, dtype=model.dtype)
        stream_keys(model, collector, table, 0, batch, has_bos=False)
        return collector

    @torch.no_grad()
    def forward():
        for lo in range(0, n, batch):
            model.bridge(table[lo : lo + batch].long().to(dev))

    index(), forward()  # warm-up
    with Peak(dev) as peak:
        t_index, _ = timed(index, dev, 2)
    with Peak(dev) as base_peak:
        t_fwd, _ = timed(forward, dev, 2)
    tokens = n * seq
    return {"tokens": tokens, "index_s": t_index, "forward_s": t_fwd, "index_tok_s": tokens / t_index,
            "forward_tok_s": tokens / t_fwd, "index_over_forward": t_index / t_fwd, "peak_gib": peak.gib,
            "baseline_peak_gib": base_peak.gib}


def eap_ig_workload(model, steps: int = 5, n_prompts: int = 16, seq: int = 32) -> dict:
    """interp.circuits.attribute(..., "eap-ig", steps) on `n_prompts` random clean/corrupted pairs of
    `seq` tokens vs `steps` x (one forward + one backward to the input embeddings) of the same batch
    (benchmarks/circuits.py's `eap_ig_workload`, timed interleaved). Peak: the device's high-water mark
    during EAP-IG, weights included."""
    from circuits import eap_ig_workload as workload  # benchmarks/circuits.py

    r = workload(model, batch=n_prompts, seq=seq, steps=steps, device=model.device)
    cuda = torch.device(model.device).type == "cuda"
    return {"ours_s": r["time_s"], "baseline_s": r["baseline_s"], "ratio": r["ratio"], "steps": steps,
            "peak_gib": r["peak_bytes"] / 2**30 if cuda else None, "baseline_peak_gib": None}


# -- runs ----------------------------------------------------------------------------------------

# workload sizes: "full" for the GPU run, "quick" for a CPU smoke run on tiny shapes
SIZES = {
    "full": dict(n_seqs=16, seg_len=50, n_prompts=16, n_reference=4, mem_tokens=16384, mem_batch=32, mem_seq=128,
                 growth_base="135m", growth_tokens=8192),
    "quick": dict(n_seqs=2, seg_len=6, n_prompts=2, n_reference=1, mem_tokens=256, mem_batch=4, mem_seq=16,
                  growth_base="tiny", growth_tokens=128),
}


def run_workload(name: str, fn) -> dict | None:
    """A workload's row; a missing optional workload (EAP-IG before it lands) or one the library
    refuses (a WorkbenchError, e.g. the fast path's replay check in low precision) is None with
    the reason printed, not a crash of the whole run."""
    from interp.errors import WorkbenchError

    try:
        return fn()
    except (ImportError, NotImplementedError, WorkbenchError) as e:
        print(f"{name}: not run ({type(e).__name__}: {e})", flush=True)
        return None


def run_shape(shape: str, device: str, dtype: str, tokenizer, workloads: list[str], sizes: dict) -> dict:
    t = time.perf_counter()
    reference = None
    if "path" in workloads and dtype not in ("fp32", "float32"):
        reference = build(shape, device, "fp32", tokenizer)  # the accuracy check's float32 reference
    model = build(shape, device, dtype, tokenizer)
    row: dict = {"shape": shape, "dtype": dtype, "params": n_params(model), "build_s": time.perf_counter() - t}
    z = sizes
    if "heads" in workloads:
        row["heads"] = heads_workload(model, z["n_seqs"], z["seg_len"])
    if "path" in workloads:
        row["path"] = run_workload("path", lambda: path_workload(model, z["n_prompts"], z["n_reference"],
                                                                   reference_model=reference))
    del reference
    if "memories" in workloads:
        row["memories"] = memories_workload(model, z["mem_tokens"], z["mem_batch"], z["mem_seq"])
    if "eap-ig" in workloads:
        row["eap-ig"] = run_workload("eap-ig", lambda: eap_ig_workload(model, n_prompts=z["n_prompts"]))
    del model
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()
    row["total_s"] = time.perf_counter() - t
    return row


def exponent(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of log y on log x."""
    lx, ly = [math.log(x) for x in xs], [math.log(y) for y in ys]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly)) / sum((a - mx) ** 2 for a in lx)


def growth_axes(base: str) -> dict:
    """(x, config changes, segment length) at three points per axis; heads grow with d_model
    (d_head fixed) and keep the family's query / KV ratio."""
    if base == "tiny":
        return {"layers": [(n, {"num_hidden_layers": n}, 6) for n in (2, 4, 8)],
                "heads": [(h, {"num_attention_heads": h, "num_key_value_heads": h // 2, "hidden_size": 16 * h}, 6)
                          for h in (2, 4, 8)],
                "length": [(2 * s + 1, {}, s) for s in (4, 8, 16)]}
    return {"layers": [(n, {"num_hidden_layers": n}, 50) for n in (8, 16, 32)],
            "heads": [(h, {"num_attention_heads": h, "num_key_value_heads": h // 3, "hidden_size": 64 * h}, 50)
                      for h in (6, 12, 24)],
            "length": [(2 * s + 1, {}, s) for s in (32, 64, 128)]}


def growth(device: str, dtype: str, tokenizer, sizes: dict, axes=("layers", "heads", "length")) -> dict:
    """Time and peak memory of each workload at three layer counts, head counts and lengths."""
    base = dict(SHAPES[sizes["growth_base"]])
    out = {}
    for axis, points in growth_axes(sizes["growth_base"]).items():
        if axis not in axes:
            continue
        rows = []
        for x, changes, seg in points:
            model = build({**base, **changes}, device, dtype, tokenizer, name=f"{axis}={x}")
            h = heads_workload(model, sizes["n_seqs"], seg_len=seg, tl=False)
            p = (run_workload(f"path ({axis}={x})", lambda: path_workload(model, sizes["n_prompts"], n_reference=1,
                                                                              targets=("logits",)))
                 or {"logits": {"fast_s": None, "peak_gib": None}})["logits"]
            m = memories_workload(model, n_tokens=sizes["growth_tokens"], batch=sizes["mem_batch"], seq=2 * seg)
            rows.append({"x": x, "heads_s": h["ours_s"], "heads_peak_gib": h["peak_gib"], "path_s": p["fast_s"],
                         "path_peak_gib": p["peak_gib"], "memories_s": m["index_s"],
                         "memories_peak_gib": m["peak_gib"]})
            del model
        xs = [r["x"] for r in rows]
        fits = {k: exponent(xs, [r[k] for r in rows]) if all(r[k] for r in rows) else None
                for k in ("heads_s", "path_s", "memories_s", "heads_peak_gib", "path_peak_gib", "memories_peak_gib")}
        out[axis] = {"family": sizes["growth_base"], "points": rows, "exponents": fits}
    return out


# -- tables --------------------------------------------------------------------------------------


def _f(x, fmt: str = ".3g") -> str:
    return "-" if x is None else format(x, fmt)


def markdown(results: dict) -> str:
    """The tables for benchmarks/RESULTS.md: one row per shape, dtype and workload; then growth."""
    lines = [f"Machine: {results['machine']}; torch {results['torch']}; {results['date']} (benchmarks/scale.py "
             f"{results['argv']})", "",
             "| shape | dtype | params | workload | ours s | baseline | baseline s | ratio | peak GiB ours / baseline "
             "| accuracy |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results["rows"]:
        head = f"| {r['shape']} | {r['dtype']} | {r['params'] / 1e9:.2f}B"
        if r.get("heads"):
            h = r["heads"]
            lines.append(f"{head} | heads | {_f(h['ours_s'])} | one forward caching patterns | {_f(h['cached_forward_s'])} "
                         f"| {h['vs_forward']:.2f}x the forward | {_f(h['peak_gib'])} / {_f(h['baseline_peak_gib'])} | |")
            if "tl_detect_head_s" in h:
                lines.append(f"{head} | heads | {_f(h['ours_s'])} | TL detect_head | {_f(h['tl_detect_head_s'])} "
                             f"| {h['vs_tl']:.0f}x faster | | max diff {h['max_abs_diff_vs_tl']:.1e} |")
        for target, p in (r.get("path") or {}).items():
            lines.append(f"{head} | path -> {target} ({p['senders']} senders) | {_f(p['fast_s'])} | per-sender loop "
                         f"(scaled) | {_f(p['reference_scaled_s'])} | {p['vs_loop']:.0f}x faster "
                         f"| {_f(p['peak_gib'])} / {_f(p['baseline_peak_gib'])} "
                         f"| vs fp32 ref: patched max {p['max_abs_diff']:.2e}; effects {p['effect_err_over_effect']:.1%} "
                         f"of the largest" + (f" (the loop in this dtype: {p['reference_effect_err_over_effect']:.1%})"
                                              if "reference_effect_err_over_effect" in p else "") + " |")
        if r.get("memories"):
            m = r["memories"]
            lines.append(f"{head} | memory index ({m['tokens']} tok) | {_f(m['index_s'])} | bare forward | {_f(m['forward_s'])} "
                         f"| {m['index_over_forward']:.2f}x the forward | {_f(m['peak_gib'])} / {_f(m['baseline_peak_gib'])} | |")
        e = r.get("eap-ig")
        if e:
            lines.append(f"{head} | EAP-IG | {_f(e['ours_s'])} | m x (forward + backward) | {_f(e['baseline_s'])} "
                         f"| {e['ratio']:.2f}x | {_f(e.get('peak_gib'))} / {_f(e.get('baseline_peak_gib'))} | |")
        elif "eap-ig" in r:
            lines.append(f"{head} | EAP-IG | not run | | | | | |")
    for key, g in results.items():
        if not key.startswith("growth_"):
            continue
        lines += ["", f"How cost grows ({key[len('growth_'):]}, the {next(iter(g.values()))['family']} family; "
                  "exponent b of time ~ x^b, least squares over the three points):", "",
                  "| axis | x | heads s | path s | memories s | peak GiB heads / path / memories |", "|---|---|---|---|---|---|"]
        for axis, v in g.items():
            for pt in v["points"]:
                lines.append(f"| {axis} | {pt['x']} | {_f(pt['heads_s'])} | {_f(pt['path_s'])} | {_f(pt['memories_s'])} "
                             f"| {_f(pt['heads_peak_gib'])} / {_f(pt['path_peak_gib'])} / {_f(pt['memories_peak_gib'])} |")
            ex = v["exponents"]
            lines.append(f"| {axis} | exponent | {_f(ex['heads_s'], '.2f')} | {_f(ex['path_s'], '.2f')} "
                         f"| {_f(ex['memories_s'], '.2f')} | "
                         + " / ".join(_f(ex[k], ".2f") for k in ("heads_peak_gib", "path_peak_gib", "memories_peak_gib")) + " |")
    for note in results.get("skipped", []):
        lines.append(f"\nNot run (time budget): {note}")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--shapes", default=None, help="comma-separated, of " + ", ".join(SHAPES) +
                    " (default 135m,1.7b,8b; tiny with --quick)")
    ap.add_argument("--dtype", default="bf16", help="comma-separated: bf16, fp32 (bf16 first: the budget cuts last)")
    ap.add_argument("--fp32-shapes", default=None, help="shapes run in fp32 (default: all of --shapes)")
    ap.add_argument("--workloads", default="heads,path,memories,eap-ig")
    ap.add_argument("--mem-tokens", type=int, default=None,
                    help="tokens per timed indexing pass (default 16384: mostly the first batches, where every "
                         "memory's top-k is still filling; more tokens reach the steady state an index build sees)")
    ap.add_argument("--tokenizer", default=None, help="tokenizer folder (default: SmolLM2's from the cache)")
    ap.add_argument("--growth", action="store_true", help="also how cost grows with layers, heads and length")
    ap.add_argument("--growth-only", action="store_true", help="only the growth runs")
    ap.add_argument("--growth-axes", default="layers,heads,length", help="comma-separated: layers, heads, length")
    ap.add_argument("--quick", action="store_true", help="tiny shapes and sizes: a CPU smoke run of every part")
    ap.add_argument("--budget-s", type=float, default=540.0,
                    help="stop starting new shapes past this many seconds (what was skipped is listed)")
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    ap.add_argument("--markdown", default=None, help="write the tables (markdown) here")
    args = ap.parse_args(argv)
    sizes = dict(SIZES["quick" if args.quick else "full"])
    if args.mem_tokens:
        sizes["mem_tokens"] = args.mem_tokens
    shapes = (args.shapes or ("tiny" if args.quick else "135m,1.7b,8b")).split(",")
    workloads = args.workloads.split(",")
    start = time.perf_counter()
    machine = torch.cuda.get_device_name() if torch.device(args.device).type == "cuda" else f"cpu x{torch.get_num_threads()}"
    print(f"machine: {machine}; torch {torch.__version__}; {time.strftime('%Y-%m-%d')}", flush=True)
    results: dict = {"machine": machine, "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"),
                     "argv": " ".join(sys.argv[1:] if argv is None else argv), "rows": [], "skipped": []}

    def in_budget(what: str) -> bool:
        if time.perf_counter() - start > args.budget_s:
            results["skipped"].append(what)
            print(f"skipped (past the {args.budget_s:.0f} s budget): {what}", flush=True)
            return False
        return True

    dtypes = args.dtype.split(",")
    if not args.growth_only:
        for dtype in dtypes:
            chosen = args.fp32_shapes.split(",") if dtype in ("fp32", "float32") and args.fp32_shapes else shapes
            for shape in chosen:
                if in_budget(f"{shape} {dtype}"):
                    row = run_shape(shape, args.device, dtype, args.tokenizer, workloads, sizes)
                    results["rows"].append(row)
                    print(json.dumps(row), flush=True)
            if dtype == dtypes[0] and args.growth and in_budget(f"growth {dtype}"):
                results[f"growth_{dtype}"] = growth(args.device, dtype, args.tokenizer, sizes, args.growth_axes.split(","))
    if args.growth_only:
        for dtype in dtypes:
            if in_budget(f"growth {dtype}"):
                results[f"growth_{dtype}"] = growth(args.device, dtype, args.tokenizer, sizes, args.growth_axes.split(","))
    results["total_s"] = time.perf_counter() - start
    text = markdown(results)
    print(text, flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))
    if args.markdown:
        Path(args.markdown).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
