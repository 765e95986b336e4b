"""FFN memories on a model (default SmolLM2-135M, all layers): indexing throughput vs a bare
forward, the agreement table by layer with permutation p-values, and the trace's latency.

1. Indexing. The same KJV token windows in the same batches in the same process, timed batch by
   batch in alternation (forward, indexing, one-sign, forward, ...):
     forward   model.bridge(tokens) -- the full forward pass with logits, no hooks
     indexing  interp.memories.build.stream_keys with the default KeyCollector -- both signs of
               every neuron (gated MLP; "+" only otherwise) folded into the running top-k on the
               device: sparse threshold merges per layer on the CPU, one stacked dense merge per
               batch on CUDA
     one-sign  the index as it was before both signs: "+" only, dense merge per layer on the CPU
               (stacked on CUDA), for the before/after ratio in the same run
   The ratio compares, batch by batch, the fastest of the repeats (on a shared machine
   interference only adds time); per-repeat ratios are printed too.
2. Build + agreement (unless --no-build): one end-to-end build_index over --build-tokens tokens
   (tokenization, shards written, values projected, agreement with --permutations permutations
   per layer) and its agreement table by layer: all memories of a layer, then each sign, with
   95% intervals and permutation p-values. --table PATH writes the table (markdown) there.
   --merges adds the merge step alone, on synthetic SwiGLU-like coefficients (silu(g)·u, g and u
   standard normal) at the model's shapes, past 10 batches: the dense merge with one sign (the
   stacked CUDA path before both signs), the dense merge with two, the sparse merge with two,
   against the bare forward of one batch.
3. Trace (unless --no-trace): interp.memories.trace on --prompts short prompts (with the index
   of step 2 when built, for trigger examples) vs a bare forward of the same prompt.

    python benchmarks/memories.py [--model smollm2-135m] [--device cpu|cuda] [--dtype float32|bfloat16]
        [--tokens 4096] [--batch 8] [--seq 128] [--repeats 3] [--build-tokens N] [--permutations 1000]
        [--table PATH] [--no-build] [--no-trace] [--json]
Goals: indexing / forward within the ratio measured before both signs (<= 1.25); the trace of one
prompt under 1 s on the 2-core CPU.
The agreement run to quote (GPU, ~262k tokens):
    python benchmarks/memories.py --device cuda --tokens 262144 --batch 64 --seq 128 \\
        --build-tokens 262144 --table benchmarks/memories_agreement_262k.md
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

PROMPTS = [
    "And God said, Let there be light: and there",
    "The Eiffel Tower is located in the city of",
    "When Mary and John went to the store, John gave a drink to",
    "In the beginning was the Word, and the Word was with",
    "The capital of Japan is",
    "def add(a, b):\n    return",
    "She opened the door and saw that the",
    "Two plus two equals",
    "The quick brown fox jumps over the lazy",
    "Blessed are the meek: for they shall inherit the",
]


def table_markdown(rows_by_group: dict[str, list[dict]], header: str) -> str:
    """The agreement table by layer as markdown, one section per group of memories."""
    lines = [header, ""]
    for group, rows in rows_by_group.items():
        lines += [f"### memories: {'both signs' if group == 'all' else 'sign ' + group}", "",
                  ("| layer | memories | agree [95% CI] | random | p | any of top-k | random | p | hit@n | random | "
                   "sameLast [95% CI] | random | sameBigram | random | active |"),
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for r in rows:
            lines.append(
                f"| {r['layer']} | {r['n_memories']} | {r['agreement']:.4f} [{r['agreement_lo']:.4f}, {r['agreement_hi']:.4f}] "
                f"| {r['agreement_baseline']:.4f} | {r['agreement_p']:.3g} | {r['agreement_any']:.3f} "
                f"| {r['agreement_any_baseline']:.3f} | {r['agreement_any_p']:.3g} | {r['hit_rate']:.4f} "
                f"| {r['hit_rate_baseline']:.4f} | {r['same_last']:.3f} [{r['same_last_lo']:.3f}, {r['same_last_hi']:.3f}] "
                f"| {r['same_last_baseline']:.3f} | {r['same_bigram']:.3f} | {r['same_bigram_baseline']:.3f} "
                f"| {r['active_fraction']:.3f} |"
            )
        lines.append("")
    return "\n".join(lines)


def time_merges(model, args, sync) -> dict:
    """The stacked merge of one batch (all layers), dense / sparse, one / two signs, vs a forward."""
    from interp.memories.keys import empty_topk, merge_topk, merge_topk_sparse

    info, dev = model.info, model.device
    n_layers, n, k, pos = info.n_layers, info.d_mlp, args.top_k, args.batch * args.seq
    gen = torch.Generator(device=dev).manual_seed(0)
    tokens = torch.randint(0, info.d_vocab, (args.batch, args.seq), device=dev, generator=gen)

    def state(signs: int):
        c, r = empty_topk(k, n, dev, signs)
        return c.expand(n_layers, *c.shape).clone(), r.expand(n_layers, *r.shape).clone()

    def timed(fn, *args):
        sync()
        t = time.perf_counter()
        out = fn(*args)
        sync()
        return time.perf_counter() - t, out

    with torch.no_grad():
        model.bridge(tokens)
        forward = statistics.median(timed(model.bridge, tokens)[0] for _ in range(5))
    refs, valid = torch.arange(pos, device=dev), torch.rand(pos, device=dev, generator=gen) > 1 / args.seq
    one, two, sparse = state(1), state(2), state(2)
    one = (one[0][:, 0], one[1][:, 0])
    times: dict[str, list[float]] = {"dense, one sign": [], "dense, two signs": [], "sparse, two signs": []}
    for b in range(30):
        g, u = (torch.randn(n_layers, pos, n, device=dev, generator=gen, dtype=model.dtype) for _ in range(2))
        coef, r = torch.nn.functional.silu(g) * u, refs + b * pos
        t1, got1 = timed(merge_topk, *one, coef, r, valid)
        t2, got2 = timed(merge_topk, *two, torch.stack([coef, -coef], 1), r, valid)
        t3, got3 = timed(merge_topk_sparse, *sparse, coef, r, valid, ("+", "-"))
        one, two, sparse = got1[:2], got2[:2], got3[:2]
        if b >= 10:
            for name, t in zip(times, (t1, t2, t3)):
                times[name].append(t)
    assert torch.equal(two[0], sparse[0]), "the sparse merge disagrees with the dense one"
    print(f"merges alone, {n_layers} layers x {n} neurons, top-{k}, {pos} positions a batch: forward {forward * 1e3:.2f} ms")
    out = {"forward_s": forward}
    for name, ts in times.items():
        m = statistics.median(ts)
        out[name] = m
        print(f"  {name:18s} {m * 1e3:8.2f} ms = {m / forward:.3f}x the forward")
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m", help="any spec interp.load accepts")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default=None, help="float32 (default) or bfloat16/float16")
    ap.add_argument("--tokens", type=int, default=4096, help="tokens per timed indexing pass")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--top-k", type=int, default=25)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--build-tokens", type=int, default=None, help="tokens for the end-to-end build (default --tokens)")
    ap.add_argument("--permutations", type=int, default=1000, help="agreement permutations per layer and group")
    ap.add_argument("--table", default=None, help="write the agreement table (markdown) to this file")
    ap.add_argument("--prompts", type=int, default=len(PROMPTS), help="prompts timed for the trace")
    ap.add_argument("--no-build", action="store_true", help="skip the end-to-end build_index and its agreement")
    ap.add_argument("--no-trace", action="store_true", help="skip the trace timing")
    ap.add_argument("--no-indexing", action="store_true", help="skip the indexing-throughput comparison")
    ap.add_argument("--merges", action="store_true", help="also time the merge step alone on synthetic coefficients")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    from interp import load
    from interp.data.corpus import open_corpus, windows
    from interp.memories import IndexSettings, build_index, trace
    from interp.memories.build import stream_keys, window_table
    from interp.memories.collector import KeyCollector
    from interp.memories.keys import signs_for

    model = load(args.model, device=args.device, dtype=args.dtype)
    info = model.info
    layers = list(range(info.n_layers))
    cuda = model.device.type == "cuda"
    device_name = str(model.device) + (f" ({torch.cuda.get_device_name()})" if cuda else "")
    result: dict = {"model": info.name, "device": device_name, "dtype": str(model.dtype),
                    "torch_threads": torch.get_num_threads(), "date": time.strftime("%Y-%m-%d")}  # fmt: skip

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    if not args.no_indexing:
        table = window_table(
            list(windows(open_corpus("kjv"), model.tokenizer, args.seq, 0, args.tokens, model.bos_token_id)), args.seq
        )
        n_tok = int((table >= 0).sum())
        batches = [(lo, table[lo : lo + args.batch]) for lo in range(0, len(table), args.batch)]
        signs = signs_for(bool(info.gated_mlp))

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

        def both():  # what build_index uses
            return KeyCollector(layers, info.d_mlp, args.top_k, device=model.device, signs=signs, dtype=model.dtype)

        def one_sign():  # the index before both signs: "+" only, dense merges
            return KeyCollector(layers, info.d_mlp, args.top_k, device=model.device, signs=("+",), sparse=False)

        # warm-up, then batch-by-batch triples so that load changes on a shared machine hit every
        # side alike; each collector runs over the whole corpus as in build_index
        forward(batches[0][1]), index(both(), *batches[0]), index(one_sign(), *batches[0])
        per_fwd, per_idx, per_one = [], [], []  # [repeat][batch] seconds
        for _ in range(args.repeats):
            default, old = both(), one_sign()
            for runs in (per_fwd, per_idx, per_one):
                runs.append([])
            for lo, batch in batches:
                per_fwd[-1].append(timed(forward, batch))
                per_idx[-1].append(timed(index, default, lo, batch))
                per_one[-1].append(timed(index, old, lo, batch))
        t_fwd, t_idx, t_one = ([sum(r) for r in runs] for runs in (per_fwd, per_idx, per_one))
        # the estimate: each batch's fastest repeat (interference only ever adds time), summed
        fwd, idx, one = (sum(min(col) for col in zip(*runs)) for runs in (per_fwd, per_idx, per_one))
        result.update({
            "tokens": n_tok, "batch": args.batch, "seq": args.seq, "layers": len(layers), "signs": "".join(signs),
            "forward_tok_s": n_tok / fwd, "indexing_tok_s": n_tok / idx, "one_sign_tok_s": n_tok / one,
            "ratio": idx / fwd, "one_sign_ratio": one / fwd,
            "ratio_per_repeat": [i / f for f, i in zip(t_fwd, t_idx)],
            "one_sign_ratio_per_repeat": [o / f for f, o in zip(t_fwd, t_one)],
            "ratio_of_medians": statistics.median(t_idx) / statistics.median(t_fwd),
            "stacked_merges": default.stacked,
        })  # fmt: skip
        print(f"forward  {n_tok} tokens: {fwd:.3f} s (sum of per-batch best)  ({n_tok / fwd:,.0f} tok/s)  "
              f"runs {[round(t, 3) for t in t_fwd]}")  # fmt: skip
        print(f"indexing {n_tok} tokens, {len(layers)} layers, signs {''.join(signs)}, top-{args.top_k}: {idx:.3f} s  "
              f"({n_tok / idx:,.0f} tok/s)  runs {[round(t, 3) for t in t_idx]}  stacked={default.stacked}")  # fmt: skip
        print(f"one sign (the index before both signs): {one:.3f} s ({n_tok / one:,.0f} tok/s), "
              f"{one / fwd:.3f}x the forward  runs {[round(t, 3) for t in t_one]}")
        print(f"per-repeat ratios {[round(r, 3) for r in result['ratio_per_repeat']]} (one sign "
              f"{[round(r, 3) for r in result['one_sign_ratio_per_repeat']]}), ratio of medians "
              f"{result['ratio_of_medians']:.3f}")  # fmt: skip
        print(f"RESULT memories indexing/forward = {idx / fwd:.3f} with signs {''.join(signs)} "
              f"(one sign, as before: {one / fwd:.3f}; goal <= 1.25) on {device_name}, {model.dtype}")

    if args.merges:
        result["merges"] = time_merges(model, args, sync)

    built = None
    tmp = tempfile.TemporaryDirectory()
    if not args.no_build:
        n_build = args.build_tokens or args.tokens
        stages: dict[str, float] = {}
        clock = {"t": time.perf_counter(), "stage": "indexing keys"}

        def progress(done: int, total: int, message: str) -> None:
            stage = "indexing keys" if message.startswith("indexing") else "values + agreement + writing"
            if stage != clock["stage"]:
                now = time.perf_counter()
                stages[clock["stage"]] = now - clock["t"]
                clock.update(t=now, stage=stage)

        t = time.perf_counter()
        settings = IndexSettings(layers=layers, n_tokens=n_build, top_k=args.top_k, seq_len=args.seq,
                                 n_permutations=args.permutations)  # fmt: skip
        built = build_index(model, settings, f"{tmp.name}/idx", batch_size=args.batch, progress=progress)
        total = time.perf_counter() - t
        stages[clock["stage"]] = time.perf_counter() - clock["t"]
        groups = {g: built.agreement(g) for g in ("all", *built.signs)} if len(built.signs) > 1 else {"all": built.agreement()}
        print(f"build_index end to end: {n_build} tokens in {total:.1f} s ({n_build / total:,.0f} tok/s); "
              + ", ".join(f"{k} {v:.1f} s" for k, v in stages.items()))  # fmt: skip
        header = (f"Agreement by layer: {info.name}, {n_build:,} KJV tokens (windows of {args.seq}), top-{args.top_k} "
                  f"triggers, {args.permutations} permutations per layer and group; {device_name}, {model.dtype}, "
                  f"{result['date']} (benchmarks/memories.py)")  # fmt: skip
        text = table_markdown(groups, header)
        print(text)
        if args.table:
            Path(args.table).write_text(text + "\n")
            print(f"table written to {args.table}")
        result.update(build_seconds=total, build_tokens=n_build, build_stages=stages, agreement=groups)

    if not args.no_trace:
        prompts = PROMPTS[: args.prompts]
        trace(model, prompts[0])  # warm-up
        got: dict[str, list[float]] = {"forward": [], "trace": [], "trace + index": []}
        for prompt in prompts:  # alternated, prompt by prompt
            tokens = model.to_tokens(prompt)
            for name, times in got.items():
                if name == "trace + index" and built is None:
                    continue
                sync()
                t = time.perf_counter()
                if name == "forward":
                    with torch.no_grad():
                        model(tokens)
                else:
                    trace(model, prompt, top=10, per_layer=3, index=built if name == "trace + index" else None)
                sync()
                times.append(time.perf_counter() - t)
        for name, times in got.items():
            if times:
                times.sort()
                p95 = times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]
                print(f"{name:14s} median {statistics.median(times):.3f} s, p95 {p95:.3f} s, max {times[-1]:.3f} s "
                      f"over {len(times)} prompts")  # fmt: skip
        median = statistics.median(got["trace"])
        print(f"RESULT memories trace of one prompt: median {median:.3f} s (goal < 1 s on the 2-core CPU), "
              f"{median / statistics.median(got['forward']):.1f}x a bare forward, on {device_name}")
        result["trace_seconds"] = {k: v for k, v in got.items() if v}
    tmp.cleanup()
    if args.json:
        print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
