"""circuit-tracer 0.5.0's attribution graph of one prompt, for benchmarks/graphs_vs_circuit_tracer.py.

Runs in circuit-tracer's own venv (benchmarks/circuit_tracer_env.sh), never in ours: it imports
neither interp nor torch from .venv. On the GPU machine: its `python3` (the image's torch) with
PYTHONPATH=/tmp/ctsite only, where .carry-ct/setup.sh put circuit-tracer's own packages
(transformers 4.57.3, TransformerLens 2.18.0, ...) that shadow the image's. Reads a local HF model folder, a transcoder set written by
interp.graphs.tracer_format, the prompt's token ids (.npy, BOS first) and the settings (JSON);
writes the graph's tensors to --out (.npz) and its timings and memory to --out with .json.

    /work/ctvenv/bin/python benchmarks/circuit_tracer_run.py --model DIR --transcoders DIR \
        --tokens tokens.npy --settings settings.json --out ct.npz

With --lengths (the longest-prompt probe): no graph is written; for each length in increasing
order, `attribute` runs on the first LENGTH token ids once (after one untimed warm-up call on at
most 64 of them), and one JSON line per attempt goes to
--jsonl (length, status ok / oom / error / time cap, seconds, peak GPU memory); it stops at the
first failure or at the first attempt over --cap-s seconds. On a GPU (settings "device": "cuda")
each call is timed between torch.cuda.synchronize() calls and its peak GPU memory is
torch.cuda.max_memory_allocated() after reset_peak_memory_stats() (the model and transcoders
included, as they stay resident).

Offline loading: TransformerLens 2.x's HookedTransformer.from_pretrained (what circuit-tracer's
from_pretrained_and_transcoders calls, with fold_ln / centring off) maps the name to an official
model name first, and refuses a folder there, though the config code after it reads a local folder
(its config.json, LlamaForCausalLM's branch). We let a folder that exists stand for its own official
name and change nothing else; the weights then come from the folder with AutoModelForCausalLM.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import threading
import time
from pathlib import Path


class PeakRSS:
    """The largest resident set size of this process while the block runs (sampled from /proc)."""

    def __init__(self, every: float = 0.002):
        self.every, self.peak, self.start = every, 0, 0
        self._stop = threading.Event()

    @staticmethod
    def now() -> int:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.now())
            time.sleep(self.every)

    def __enter__(self):
        self.start = self.peak = self.now()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.now())


def local_names_are_official() -> None:
    import transformer_lens.loading_from_pretrained as loading

    official = loading.get_official_model_name

    def get_official_model_name(model_name: str):
        return model_name if (Path(model_name) / "config.json").is_file() else official(model_name)

    loading.get_official_model_name = get_official_model_name


def load_transcoder_set(folder: Path, device, dtype):
    import yaml
    from circuit_tracer.transcoder.activation_functions import TopK
    from circuit_tracer.utils.hf_utils import load_transcoders

    config = yaml.safe_load((folder / "config.yaml").read_text())
    tcs = load_transcoders(config, device=device, dtype=dtype, lazy_encoder=False, lazy_decoder=False)
    meta = config.get("interp") or {}
    if meta.get("activation") == "topk":  # not in the file format: set it as circuit-tracer's TopK
        for t in tcs:
            t.activation_function = TopK(int(meta["k"]))
    return tcs, meta


def is_oom(e: BaseException) -> bool:
    import torch

    text = str(e)
    return isinstance(e, torch.cuda.OutOfMemoryError) or "out of memory" in text or "CUBLAS_STATUS_ALLOC_FAILED" in text


def timed(call, device) -> tuple[object, dict]:
    """One call of `call()` on either side: wall seconds (CUDA-synchronised on a GPU), RSS and, on a GPU,
    the memory allocated before it and its peak."""
    import torch

    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    gpu_before = torch.cuda.memory_allocated(device) if cuda else 0
    with PeakRSS() as mem:
        t0 = time.perf_counter()
        result = call()
        if cuda:
            torch.cuda.synchronize(device)
        wall = time.perf_counter() - t0
    run = {"attribute_s": wall, "rss_before": mem.start, "rss_peak": mem.peak}
    if cuda:
        run |= {"gpu_before": gpu_before, "gpu_peak": torch.cuda.max_memory_allocated(device)}
    return result, run


def timed_attribute(attribute, model, tokens, settings: dict, device) -> tuple[object, dict]:
    """One of circuit-tracer's `attribute` calls, `timed`."""
    return timed(lambda: attribute(tokens, model, max_n_logits=settings["max_n_logits"],
                                   desired_logit_prob=settings["desired_logit_prob"], batch_size=settings["batch_size"],
                                   max_feature_nodes=settings.get("max_feature_nodes")), device)  # fmt: skip


def probe_lengths(label: str, attempt, n_ids: int, lengths: list[int], device, cap_s: float, jsonl: Path) -> None:
    """The longest-prompt probe of either side: an untimed warm-up (CUDA context, kernels), then `attempt(n)`
    (the record of one timed call on the first n token ids: attribute_s, ...) for increasing lengths, until
    the first failure (out of memory first of all) or a call over cap_s; one JSON line per attempt."""
    import torch

    warm = min(64, lengths[0], n_ids)
    t0 = time.perf_counter()
    attempt(warm)
    print(f"[{label}] warm-up ({warm} tokens) {time.perf_counter() - t0:.2f}s", flush=True)
    for n in lengths:
        if n > n_ids:
            rec = {"tokens": n, "status": "skipped", "error": f"only {n_ids} token ids given"}
        else:
            print(f"[{label}] {n} tokens ...", flush=True)
            try:
                rec = {"tokens": n, "status": "ok", **attempt(n)}
            except Exception as e:  # noqa: BLE001 - recorded, then the probe stops
                rec = {"tokens": n, "status": "oom" if is_oom(e) else "error", "error": f"{type(e).__name__}: {str(e)[:400]}"}
            if rec["status"] == "ok" and rec["attribute_s"] > cap_s:
                rec["status"] = "time_cap"  # it completed, but the next length would take longer still
        with jsonl.open("a") as f:
            f.write(json.dumps(rec) + "\n")
        gb = f", peak GPU {rec['gpu_peak'] / 2**30:.2f} GiB" if "gpu_peak" in rec else ""
        secs = f" {rec['attribute_s']:.2f}s" if "attribute_s" in rec else ""
        print(f"[{label}] {n} tokens: {rec['status']}{secs}{gb}", flush=True)
        if rec["status"] != "ok":
            break
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()


def longest(attribute, model, ids, lengths: list[int], settings: dict, device, cap_s: float, jsonl: Path) -> None:
    """circuit-tracer's side of the probe."""

    def attempt(n: int) -> dict:
        graph, run = timed_attribute(attribute, model, ids[:n], settings, device)
        return {**run, "active_features": int(graph.active_features.shape[0]), "nodes": int(graph.adjacency_matrix.shape[0])}

    probe_lengths("circuit-tracer", attempt, len(ids), lengths, device, cap_s, jsonl)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--transcoders", required=True)
    ap.add_argument("--tokens", required=True, help=".npy of token ids (BOS first); with --lengths, the longest prompt")
    ap.add_argument("--settings", required=True)
    ap.add_argument("--out", default=None, help="the graph (.npz) and the timings (.json beside it)")
    ap.add_argument("--lengths", default=None, help="longest-prompt probe: comma-separated lengths, increasing")
    ap.add_argument("--cap-s", type=float, default=120.0, help="with --lengths: stop after an attempt over this")
    ap.add_argument("--jsonl", default=None, help="with --lengths: one JSON line per attempt")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    if (args.lengths is None) == (args.out is None) or (args.lengths is not None and args.jsonl is None):
        ap.error("give --out, or --lengths with --jsonl")

    import numpy as np
    import torch

    settings = json.loads(Path(args.settings).read_text())
    torch.set_num_threads(int(settings.get("threads", 2)))
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[settings.get("dtype", "float32")]
    device = torch.device(settings.get("device", "cpu"))
    local_names_are_official()
    from circuit_tracer import ReplacementModel, attribute

    res: dict = {"threads": torch.get_num_threads(), "torch": torch.__version__, "device": str(device)}
    try:
        from importlib.metadata import version

        res["versions"] = {p: version(p) for p in ("circuit-tracer", "transformers", "transformer-lens", "numpy")}
    except Exception:  # noqa: BLE001 - informative only
        pass
    if device.type == "cuda":
        res["gpu"] = torch.cuda.get_device_name(device)
    t0 = time.perf_counter()
    tcs, meta = load_transcoder_set(Path(args.transcoders), device, dtype)
    model = ReplacementModel.from_pretrained_and_transcoders(str(Path(args.model).resolve()), tcs,
                                                             backend="transformerlens", device=device, dtype=dtype)  # fmt: skip
    res["load_s"] = time.perf_counter() - t0
    tokens = torch.tensor(np.load(args.tokens), dtype=torch.long)
    if args.lengths is not None:
        lengths = [int(x) for x in args.lengths.split(",")]
        print(f"[circuit-tracer] loaded in {res['load_s']:.1f}s {json.dumps(res.get('versions', {}))}", flush=True)
        longest(attribute, model, tokens, lengths, settings, device, args.cap_s, Path(args.jsonl))
        return 0
    runs = []
    graph = None
    for _ in range(int(settings.get("repeats", 1))):
        graph, run = timed_attribute(attribute, model, tokens, settings, device)
        runs.append(run)
    res["runs"] = runs
    res["activation"] = meta.get("activation", "relu")
    res["active_features"] = int(graph.active_features.shape[0])
    np.savez(args.out, adjacency=graph.adjacency_matrix.float().cpu().numpy(),
             active_features=graph.active_features.cpu().numpy(), activation_values=graph.activation_values.float().cpu().numpy(),
             selected_features=graph.selected_features.cpu().numpy(), input_tokens=graph.input_tokens.cpu().numpy(),
             logit_tokens=np.array([t.vocab_idx for t in graph.logit_targets]),
             logit_probs=graph.logit_probabilities.float().cpu().numpy())  # fmt: skip
    Path(args.out).with_suffix(".json").write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
