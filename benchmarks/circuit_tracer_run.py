"""circuit-tracer 0.5.0's attribution graph of one prompt, for benchmarks/graphs_vs_circuit_tracer.py.

Runs in circuit-tracer's own venv (benchmarks/circuit_tracer_env.sh), never in ours: it imports
neither interp nor torch from .venv. Reads a local HF model folder, a transcoder set written by
interp.graphs.tracer_format, the prompt's token ids (.npy, BOS first) and the settings (JSON);
writes the graph's tensors to --out (.npz) and its timings and memory to --out with .json.

    /work/ctvenv/bin/python benchmarks/circuit_tracer_run.py --model DIR --transcoders DIR \
        --tokens tokens.npy --settings settings.json --out ct.npz

Offline loading: TransformerLens 2.x's HookedTransformer.from_pretrained (what circuit-tracer's
from_pretrained_and_transcoders calls, with fold_ln / centring off) maps the name to an official
model name first, and refuses a folder there, though the config code after it reads a local folder
(its config.json, LlamaForCausalLM's branch). We let a folder that exists stand for its own official
name and change nothing else; the weights then come from the folder with AutoModelForCausalLM.
"""

from __future__ import annotations

import argparse
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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--transcoders", required=True)
    ap.add_argument("--tokens", required=True)
    ap.add_argument("--settings", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

    import numpy as np
    import torch

    settings = json.loads(Path(args.settings).read_text())
    torch.set_num_threads(int(settings.get("threads", 2)))
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[settings.get("dtype", "float32")]
    device = torch.device("cpu")
    local_names_are_official()
    from circuit_tracer import ReplacementModel, attribute

    res: dict = {"threads": torch.get_num_threads(), "torch": torch.__version__}
    t0 = time.perf_counter()
    tcs, meta = load_transcoder_set(Path(args.transcoders), device, dtype)
    model = ReplacementModel.from_pretrained_and_transcoders(str(Path(args.model).resolve()), tcs,
                                                             backend="transformerlens", device=device, dtype=dtype)  # fmt: skip
    res["load_s"] = time.perf_counter() - t0
    tokens = torch.tensor(np.load(args.tokens), dtype=torch.long)
    runs = []
    graph = None
    for _ in range(int(settings.get("repeats", 1))):
        with PeakRSS() as mem:
            t0 = time.perf_counter()
            graph = attribute(tokens, model, max_n_logits=settings["max_n_logits"],
                              desired_logit_prob=settings["desired_logit_prob"], batch_size=settings["batch_size"],
                              max_feature_nodes=settings.get("max_feature_nodes"))  # fmt: skip
            wall = time.perf_counter() - t0
        runs.append({"attribute_s": wall, "rss_before": mem.start, "rss_peak": mem.peak})
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
