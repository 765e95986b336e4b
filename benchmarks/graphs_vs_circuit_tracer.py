"""Attribution graphs (issue 26): ours side by side with circuit-tracer 0.5.0's, same model, transcoders, prompt.

A small random Llama-shaped model (GQA, RMSNorm, SwiGLU, rotary; GPT-2's offline tokenizer) is saved
as a local HF folder; random TopK transcoders (interp.features Dictionary, optionally with skip
connections and biases) are written in circuit-tracer's format (interp.graphs.tracer_format). Our
`attribute` runs here; circuit-tracer's `attribute` runs in its own venv (benchmarks/
circuit_tracer_env.sh) through benchmarks/circuit_tracer_run.py, the two exchanging .npy / .npz / JSON
files in a temporary folder. Same token ids (BOS first), same max_n_logits, desired_logit_prob,
batch size and feature cap, float32.

Nodes are matched by (layer, position, feature) for features, (layer, position) for error nodes,
position for token nodes and vocabulary id for logit nodes; the adjacency is compared on the nodes
both graphs have: ||A_ours - A_ct||_F / ||A_ct||_F and max |A_ours - A_ct|, overall and by block
(target kind x source kind). Wall time of each `attribute` call (replacement build / forward pass
included, model load excluded) and the peak resident memory (RSS) during it and of the process.

    python benchmarks/graphs_vs_circuit_tracer.py --tokens 16,64 --out graphs_vs_ct.json

On a GPU (--device cuda) each `attribute` call is timed between torch.cuda.synchronize() calls and
its peak GPU memory is torch.cuda.max_memory_allocated() after reset_peak_memory_stats(), in each
process (the model and transcoders, resident, included; "GPU+" is the peak minus what was allocated
before the call). With --longest, each side probes the longest prompt it fits, in a subprocess of
its own (an OOM cannot touch the other side): --lengths in increasing order, the same settings,
one call each after one untimed warm-up call, stopping at the first failure (CUDA out of memory
first of all), at the first call over --cap-s seconds, or when the side's subprocess has run
--side-timeout-s seconds. On the GPU machine circuit-tracer's side runs as `python3` with
PYTHONPATH=/tmp/ctsite (.carry-ct/setup.sh installs its packages there):

    python benchmarks/graphs_vs_circuit_tracer.py --device cuda --n-layers 30 --d-model 576 --n-heads 9 \
        --n-kv-heads 3 --d-mlp 1536 --d-sae 9216 --k 64 --max-feature-nodes 7500 --tokens 128 \
        --longest --lengths 256,512,1024,2048,4096,8192 --ct-python python3 --ct-pythonpath /tmp/ctsite
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from circuit_tracer_run import probe_lengths, timed
from graphs import TEXT

CT_PYTHON = "/work/ctvenv/bin/python"


def save_tiny_llama(folder: Path, n_layers: int, d_model: int, n_heads: int, n_kv_heads: int, d_mlp: int,
                    n_ctx: int, init: float, seed: int = 0) -> Path:  # fmt: skip
    """A random Llama (GQA, RMSNorm, SwiGLU, rotary) with GPT-2's tokenizer as a local HF folder."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from interp.models.tokenizers import gpt2_tokenizer

    tok = gpt2_tokenizer()
    torch.manual_seed(seed)
    cfg = LlamaConfig(num_hidden_layers=n_layers, num_attention_heads=n_heads, num_key_value_heads=n_kv_heads,
                      hidden_size=d_model, intermediate_size=d_mlp, vocab_size=len(tok), max_position_embeddings=n_ctx,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, initializer_range=init,
                      tie_word_embeddings=False)  # fmt: skip
    LlamaForCausalLM(cfg).eval().save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def make_transcoders(model, d_sae: int, k: int, skip: bool, seed: int = 0):
    """Random TopK transcoders (benchmarks/graphs.py's) with random biases and, with `skip`, skip weights."""
    from graphs import random_transcoders

    from interp.features import Dictionary, DictionaryConfig

    tc = random_transcoders(model, d_sae, k, seed)
    gen = torch.Generator().manual_seed(seed + 1)
    d = model.info.d_model
    tensors = {n: t.clone() for n, t in tc.tensors().items()}
    tensors["b_enc"] = torch.randn(tensors["b_enc"].shape, generator=gen) * 0.1
    tensors["b_dec"] = torch.randn(tensors["b_dec"].shape, generator=gen) * 0.02
    if skip:
        tensors["W_skip"] = torch.randn(len(tc.layers), d, d, generator=gen) * 0.1 * d**-0.5
    cfg = DictionaryConfig(**{**tc.cfg.to_dict(), "skip": skip})
    return Dictionary(cfg).load_tensors(tensors)


def node_keys(kinds: list[str], features: np.ndarray, n_layers: int, n_pos: int, logit_tokens: np.ndarray) -> list:
    """One key per node in circuit-tracer's (and our) node order: features, errors, tokens, logits."""
    keys = [("feature", int(la), int(p), int(f)) for la, p, f in features]
    keys += [("error", la, p) for la in range(n_layers) for p in range(n_pos)]
    keys += [("token", p) for p in range(n_pos)]
    keys += [("logit", int(v)) for v in logit_tokens]
    return keys


def compare(ours: dict, ct: dict, n_layers: int) -> dict:
    """Match nodes by key and compare the adjacency on the shared ones, overall and by block."""
    P = len(ours["tokens"])
    ko = node_keys([], ours["features"], n_layers, P, ours["logit_tokens"])
    kc = node_keys([], ct["features"], n_layers, P, ct["logit_tokens"])
    where = {k: i for i, k in enumerate(kc)}
    shared = [(i, where[k]) for i, k in enumerate(ko) if k in where]
    io = np.array([a for a, _ in shared])
    ic = np.array([b for _, b in shared])
    A = ours["adjacency"][np.ix_(io, io)].astype(np.float64)
    B = ct["adjacency"][np.ix_(ic, ic)].astype(np.float64)
    diff = A - B
    kind = np.array([ko[i][0] for i in io])
    out = {
        "nodes_ours": len(ko), "nodes_ct": len(kc), "nodes_shared": len(shared),
        "features_ours": len(ours["features"]), "features_ct": len(ct["features"]),
        "same_logits": [int(v) for v in ours["logit_tokens"]] == [int(v) for v in ct["logit_tokens"]],
        "logit_prob_max_abs_diff": float(np.abs(np.asarray(ours["logit_probs"]) - np.asarray(ct["logit_probs"])).max())
        if len(ours["logit_probs"]) == len(ct["logit_probs"]) else None,
        "rel_err": float(np.linalg.norm(diff) / max(np.linalg.norm(B), 1e-30)),
        "max_abs": float(np.abs(diff).max()) if diff.size else 0.0,
        "max_abs_ct": float(np.abs(B).max()) if B.size else 0.0,
        "nonzero_ours": int((A != 0).sum()), "nonzero_ct": int((B != 0).sum()),
    }  # fmt: skip
    fo = {tuple(map(int, f)): i for i, f in enumerate(ours["features"])}
    fc = {tuple(map(int, f)): i for i, f in enumerate(ct["features"])}
    both = sorted(set(fo) & set(fc))
    if both:
        ao = np.array([ours["activations"][fo[f]] for f in both])
        ac = np.array([ct["activations"][fc[f]] for f in both])
        out["activation_max_abs_diff"] = float(np.abs(ao - ac).max())
    blocks = {}
    for t in ("feature", "logit"):
        for s in ("feature", "error", "token"):
            r, c = kind == t, kind == s
            if r.any() and c.any():
                d, b = diff[np.ix_(r, c)], B[np.ix_(r, c)]
                blocks[f"{t}<-{s}"] = {"rel_err": float(np.linalg.norm(d) / max(np.linalg.norm(b), 1e-30)),
                                       "max_abs": float(np.abs(d).max()), "norm_ct": float(np.linalg.norm(b))}  # fmt: skip
    out["blocks"] = blocks
    return out


def timed_ours(model, tc, tokens: torch.Tensor, s: dict, device: torch.device):
    """One of our `attribute` calls, timed as circuit-tracer's are (circuit_tracer_run.timed)."""
    from interp.graphs.attribute import attribute

    return timed(lambda: attribute(model, tc, tokens, max_n_logits=s["max_n_logits"], desired_logit_prob=s["desired_logit_prob"],
                                   batch_size=s["batch_size"], max_feature_nodes=s["max_feature_nodes"]), device)  # fmt: skip


def run_ours(model, tc, tokens: torch.Tensor, s: dict, repeats: int, device: torch.device) -> tuple[dict, dict]:
    from interp.graphs.attribute import check_rows

    runs, g = [], None
    for _ in range(repeats):
        g, run = timed_ours(model, tc, tokens, s, device)
        runs.append(run)
    data = {"tokens": g.tokens, "features": g.features.cpu().numpy(), "activations": g.activations.cpu().numpy(),
            "logit_tokens": g.logit_tokens.cpu().numpy(), "logit_probs": g.logit_probs.cpu().numpy(),
            "adjacency": g.adjacency.cpu().numpy()}  # fmt: skip
    return data, {"runs": runs, "row_sum_max_abs_err": check_rows(g, atol=1e-3, rtol=1e-3), "active_features":
                  int(g.settings.get("active_features", g.n_features))}  # fmt: skip


def ct_env(pythonpath: str | None) -> dict:
    """circuit-tracer's subprocess environment: offline, and with --ct-pythonpath as its ONLY
    PYTHONPATH (so that /tmp/ctsite's transformers 4.57 shadows the image's and ours never leaks in)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env.pop("PYTHONPATH", None)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    return env


def run_ct(work: Path, model_dir: Path, tc_dir: Path, tokens: torch.Tensor, s: dict, repeats: int, python: str,
           pythonpath: str | None = None) -> tuple[dict, dict]:  # fmt: skip
    np.save(work / "tokens.npy", tokens.numpy())
    (work / "settings.json").write_text(json.dumps({**s, "repeats": repeats}))
    out = work / "ct.npz"
    t0 = time.perf_counter()
    proc = subprocess.run([python, str(HERE / "circuit_tracer_run.py"), "--model", str(model_dir), "--transcoders",
                           str(tc_dir), "--tokens", str(work / "tokens.npy"), "--settings", str(work / "settings.json"),
                           "--out", str(out)], capture_output=True, text=True, check=False,
                          env=ct_env(pythonpath))  # fmt: skip
    if proc.returncode != 0:
        raise SystemExit(f"circuit-tracer's run failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    meta = json.loads(out.with_suffix(".json").read_text())
    meta["subprocess_s"] = time.perf_counter() - t0
    z = np.load(out)
    sel = z["selected_features"]
    data = {"tokens": z["input_tokens"], "features": z["active_features"][sel], "activations": z["activation_values"][sel],
            "logit_tokens": z["logit_tokens"], "logit_probs": z["logit_probs"], "adjacency": z["adjacency"]}  # fmt: skip
    return data, meta


def topk_nonpositive(model, tc, tokens: torch.Tensor) -> int:
    """How many of the (layer, non-BOS position) rows have a non-positive value among their k largest
    pre-activations: there circuit-tracer's TopK (no ReLU) and ours (ReLU after) differ."""
    from interp.graphs.replacement import build

    R = build(model, tc, tokens)
    top = R.pre[:, 1:].topk(tc.cfg.k, dim=-1).values
    return int((top <= 0).any(-1).sum())


def worker_ours(folder: Path, lengths: list[int], cap_s: float, device: torch.device, jsonl: Path) -> int:
    """Our side of --longest, in a subprocess: the same model folder, transcoders, token ids and
    settings as circuit-tracer's; one JSON line per attempt; stops as circuit_tracer_run.probe_lengths does.
    Progress goes to stdout (the parent shows it), warnings and tracebacks to stderr (a log)."""
    from interp import load
    from interp.features import Dictionary, DictionaryConfig

    settings = json.loads((folder / "settings.json").read_text())
    t0 = time.perf_counter()
    model = load(str(folder / "tiny_gqa"), device=str(device))
    blob = torch.load(folder / "transcoders.pt")
    tc = Dictionary(DictionaryConfig(**blob["cfg"])).load_tensors(blob["tensors"]).to(device)
    ids = torch.tensor(np.load(folder / "ids.npy"), dtype=torch.long)
    print(f"[ours] loaded in {time.perf_counter() - t0:.1f}s", flush=True)

    def attempt(n: int) -> dict:
        g, run = timed_ours(model, tc, ids[:n], settings, device)
        return {**run, "active_features": int(g.settings.get("active_features", g.n_features)), "nodes": int(g.n_nodes)}

    probe_lengths("ours", attempt, len(ids), lengths, device, cap_s, jsonl)
    return 0


def probe(side: str, cmd: list[str], env: dict, jsonl: Path, lengths: list[int], timeout_s: float, log: Path) -> dict:
    """Run one side's --longest subprocess and read what it recorded, also after a crash or a kill."""
    print(f"[{side}] longest-prompt probe: {lengths} (side timeout {timeout_s:.0f}s)", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    rc, killed = None, False
    with log.open("w") as err:
        try:  # progress lines to our stderr; the side's own stderr (warnings, tracebacks) to the log
            rc = subprocess.run(cmd, env=env, stdout=sys.stderr, stderr=err, timeout=timeout_s, check=False).returncode
        except subprocess.TimeoutExpired:
            killed = True
    out = {"wall_s": time.perf_counter() - t0, "rc": rc, "killed_at_side_timeout": killed}
    attempts = [json.loads(line) for line in jsonl.read_text().splitlines()] if jsonl.exists() else []
    done = {a["tokens"] for a in attempts}
    if (killed or rc != 0) and (not attempts or attempts[-1]["status"] == "ok"):
        nxt = next((n for n in lengths if n not in done), None)  # the attempt it was in when it died
        if nxt is not None:
            attempts.append({"tokens": nxt, "status": "side_timeout" if killed else f"crashed (rc {rc})"})
    if rc not in (0, None) or killed:
        out["stderr_tail"] = log.read_text()[-3000:]
    ok = [a["tokens"] for a in attempts if a["status"] in ("ok", "time_cap")]
    out |= {
        "attempts": attempts,
        "longest_completed": max(ok) if ok else None,
        "stopped_by": attempts[-1]["status"] if attempts and attempts[-1]["status"] != "ok" else "end of --lengths",
    }
    print(f"[{side}] longest completed: {out['longest_completed']} (stopped by {out['stopped_by']}, "
          f"{out['wall_s']:.0f}s)", file=sys.stderr, flush=True)  # fmt: skip
    return out


def ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def parse(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", default="16,64", help="prompt lengths (BOS included) to compare graphs at, "
                    "comma-separated ('' for none)")  # fmt: skip
    ap.add_argument("--n-layers", type=int, default=4)
    ap.add_argument("--d-model", type=int, default=64)
    ap.add_argument("--n-heads", type=int, default=4)
    ap.add_argument("--n-kv-heads", type=int, default=2)
    ap.add_argument("--d-mlp", type=int, default=256)
    ap.add_argument("--n-ctx", type=int, default=None, help="the model's context (default: the longest length asked)")
    ap.add_argument("--init", type=float, default=0.1, help="the random model's initializer_range")
    ap.add_argument("--d-sae", type=int, default=512)
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--skip", action="store_true", help="skip transcoders (W_skip)")
    ap.add_argument("--max-n-logits", type=int, default=10)
    ap.add_argument("--desired-logit-prob", type=float, default=0.95)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--max-feature-nodes", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=2, help="attribute calls per side (the fastest is reported)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--ct-python", default=CT_PYTHON, help="circuit-tracer's Python (GPU machine: python3)")
    ap.add_argument("--ct-pythonpath", default=None, help="circuit-tracer's only PYTHONPATH (GPU machine: /tmp/ctsite)")
    ap.add_argument("--longest", action="store_true", help="probe the longest prompt each side fits (see above)")
    ap.add_argument("--lengths", default="256,512,1024,2048,4096,8192", help="--longest's lengths, increasing")
    ap.add_argument("--cap-s", type=float, default=60.0, help="--longest: stop a side after a call over this")
    ap.add_argument("--side-timeout-s", type=float, default=150.0, help="--longest: kill a side's probe after this")
    ap.add_argument("--sides", default="ours,ct", help="--longest: which sides to probe, in order")
    ap.add_argument("--worker-ours", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--jsonl", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", default=None)
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.worker_ours:
        return worker_ours(Path(args.worker_ours), ints(args.lengths), args.cap_s, device, Path(args.jsonl))
    if not (Path(args.ct_python).is_file() or shutil.which(args.ct_python)):
        raise SystemExit(f"no circuit-tracer venv at {args.ct_python}: run bash benchmarks/circuit_tracer_env.sh first")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda but torch sees no GPU")

    from interp import load
    from interp.graphs.tracer_format import write_tracer_transcoders

    lengths = ints(args.tokens)
    probe_ns = ints(args.lengths) if args.longest else []
    if probe_ns != sorted(probe_ns):
        raise SystemExit("--lengths must increase")
    n_ctx = args.n_ctx or max(lengths + probe_ns)
    settings = {"max_n_logits": args.max_n_logits, "desired_logit_prob": args.desired_logit_prob,
                "batch_size": args.batch_size, "max_feature_nodes": args.max_feature_nodes, "dtype": "float32",
                "threads": args.threads, "device": args.device,
                "tf32_matmul": bool(torch.backends.cuda.matmul.allow_tf32)}  # fmt: skip
    machine = f"CPU, {os.cpu_count()} cores (shared)"
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        machine = f"{p.name}, {p.total_memory / 2**30:.1f} GiB; {os.cpu_count()} CPU cores; torch {torch.__version__}"
    res = {"date": time.strftime("%Y-%m-%d"), "machine": machine, "settings": settings,
           "model": {"n_layers": args.n_layers, "d_model": args.d_model, "n_heads": args.n_heads,
                     "n_kv_heads": args.n_kv_heads, "d_mlp": args.d_mlp, "n_ctx": n_ctx, "init": args.init,
                     "vocab": "GPT-2's offline tokenizer (50257)"},
           "transcoders": {"activation": "topk", "d_sae": args.d_sae, "k": args.k, "skip": args.skip},
           "runs": []}  # fmt: skip
    print(f"[setup] {machine}; model {res['model']}; transcoders {res['transcoders']}", file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(prefix="graphs_vs_ct_") as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        # TransformerLens 2.x reads a folder whose name says "llama" or "gemma" by a path that needs the hub
        model_dir = save_tiny_llama(tmp / "tiny_gqa", args.n_layers, args.d_model, args.n_heads, args.n_kv_heads,
                                    args.d_mlp, n_ctx, args.init)  # fmt: skip
        assert not any(w in str(model_dir).lower() for w in ("llama", "gemma"))
        model = load(str(model_dir), device="cpu")
        tc = make_transcoders(model, args.d_sae, args.k, args.skip)
        write_tracer_transcoders(tc, tmp / "transcoders", scan="tiny-random")
        text_ids = model.tokenizer(TEXT + " ")["input_ids"]
        longest_n = max(lengths + probe_ns)
        ids = [model.bos_token_id] + (text_ids * (longest_n // len(text_ids) + 2))[: longest_n - 1]
        print(f"[setup] model and transcoders written in {time.perf_counter() - t0:.1f}s", file=sys.stderr, flush=True)
        compare_at(args, res, model, tc, model_dir, tmp, ids, lengths, settings, device)
        if probe_ns:
            (tmp / "settings.json").write_text(json.dumps({**settings, "repeats": 1}))
            torch.save({"cfg": tc.cfg.to_dict(), "tensors": tc.tensors()}, tmp / "transcoders.pt")
            np.save(tmp / "ids.npy", np.array(ids[: max(probe_ns)], dtype=np.int64))
            del model, tc
            gc.collect()
            probe_sides(args, res, tmp, model_dir, probe_ns, lengths, device)
    if res["runs"]:
        print(table(res))
    if "longest" in res:
        print(longest_table(res["longest"]))
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=1))
    return 0


def compare_at(args, res: dict, model, tc, model_dir: Path, tmp: Path, ids: list[int], lengths: list[int],
               settings: dict, device: torch.device) -> None:  # fmt: skip
    """Both sides' graphs at each of `lengths`, compared (appended to res["runs"]; --out rewritten after each)."""
    from interp import load

    if lengths:
        mdev, tdev = (
            (model, tc)
            if device.type == "cpu"
            else (load(str(model_dir), device=args.device), copy.deepcopy(tc).to(device))
        )
    for n in lengths:
        tokens = torch.tensor(ids[:n])
        work = tmp / f"len{n}"
        work.mkdir()
        ours, ours_meta = run_ours(mdev, tdev, tokens, settings, args.repeats, device)
        if device.type == "cuda":
            torch.cuda.empty_cache()
        ct, ct_meta = run_ct(work, model_dir, tmp / "transcoders", tokens, settings, args.repeats, args.ct_python,
                             args.ct_pythonpath)  # fmt: skip
        assert [int(t) for t in ct["tokens"]] == tokens.tolist(), "circuit-tracer read other tokens"
        cmp = compare(ours, ct, args.n_layers)
        del ours, ct
        row = {"tokens": n, "compare": cmp, "topk_rows_with_nonpositive": topk_nonpositive(mdev, tdev, tokens),
               "ours": summary(ours_meta), "circuit_tracer": summary(ct_meta)}  # fmt: skip
        res["runs"].append(row)
        gpu = lambda side: f" ({row[side]['gpu_peak_mib']:.0f} MiB GPU)" if "gpu_peak_mib" in row[side] else ""
        print(
            f"[{n} tokens] rel_err {cmp['rel_err']:.2e}  max_abs {cmp['max_abs']:.2e}  nodes shared "
            f"{cmp['nodes_shared']} of {cmp['nodes_ours']} / {cmp['nodes_ct']}  ours {row['ours']['attribute_s']:.2f}s"
            f"{gpu('ours')}  ct {row['circuit_tracer']['attribute_s']:.2f}s{gpu('circuit_tracer')}",
            file=sys.stderr,
            flush=True,
        )
        if args.out:  # what is done so far survives a later failure
            Path(args.out).write_text(json.dumps(res, indent=1))
    if lengths:
        del mdev, tdev
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()


def probe_sides(args, res: dict, tmp: Path, model_dir: Path, probe_ns: list[int], lengths: list[int],
                device: torch.device) -> None:  # fmt: skip
    """--longest: each side's probe in its own subprocess, over the files written to `tmp` (res["longest"])."""
    common = ["--lengths", args.lengths, "--cap-s", str(args.cap_s)]
    res["longest"] = {"lengths": probe_ns, "cap_s": args.cap_s, "side_timeout_s": args.side_timeout_s,
                      "note": "one call per length after an untimed warm-up; stops at the first failure or "
                              "call over cap_s; each side in its own process (peak GPU memory is that "
                              "process's max_memory_allocated, model and transcoders included); "
                              + ("this process kept a CUDA context open meanwhile (the comparison ran here)"
                                 if lengths and device.type == "cuda" else "no other process of ours on the GPU")}  # fmt: skip
    for side in [x.strip() for x in args.sides.split(",") if x.strip()]:
        jsonl = tmp / f"longest_{side}.jsonl"
        if side == "ours":
            cmd = [sys.executable, str(Path(__file__).resolve()), "--worker-ours", str(tmp), "--device",
                   args.device, "--threads", str(args.threads), "--jsonl", str(jsonl), *common]  # fmt: skip
            env = os.environ.copy()
        elif side == "ct":
            cmd = [args.ct_python, str(HERE / "circuit_tracer_run.py"), "--model", str(model_dir),
                   "--transcoders", str(tmp / "transcoders"), "--tokens", str(tmp / "ids.npy"), "--settings",
                   str(tmp / "settings.json"), "--jsonl", str(jsonl), *common]  # fmt: skip
            env = ct_env(args.ct_pythonpath)
        else:
            raise SystemExit(f"unknown side {side!r} in --sides (ours, ct)")
        key = "ours" if side == "ours" else "circuit_tracer"
        res["longest"][key] = probe(side, cmd, env, jsonl, probe_ns, args.side_timeout_s, tmp / f"{side}.log")
        if args.out:
            Path(args.out).write_text(json.dumps(res, indent=1))


def summary(meta: dict) -> dict:
    runs = meta["runs"]
    out = {**meta, "attribute_s": best(runs)["attribute_s"], "rss_peak_mib": max(r["rss_peak"] for r in runs) / 2**20,
           "rss_increase_mib": max(r["rss_peak"] - r["rss_before"] for r in runs) / 2**20}  # fmt: skip
    if "gpu_peak" in runs[0]:
        out |= {"gpu_peak_mib": max(r["gpu_peak"] for r in runs) / 2**20,
                "gpu_increase_mib": max(r["gpu_peak"] - r["gpu_before"] for r in runs) / 2**20}  # fmt: skip
    return out


def longest_table(lg: dict) -> str:
    sides = [k for k in ("ours", "circuit_tracer") if k in lg]
    lines = [f"{'side':>14} {'tokens':>6} {'status':>14} {'attribute s':>11} {'GPU peak MiB':>12} {'GPU+ MiB':>9}"]
    for side in sides:
        for a in lg[side]["attempts"]:
            s = f"{a['attribute_s']:.2f}" if "attribute_s" in a else "-"
            g = f"{a['gpu_peak'] / 2**20:.0f}" if "gpu_peak" in a else "-"
            gi = f"{(a['gpu_peak'] - a['gpu_before']) / 2**20:.0f}" if "gpu_peak" in a else "-"
            lines.append(f"{side:>14} {a['tokens']:>6} {a['status'][:14]:>14} {s:>11} {g:>12} {gi:>9}")
        lines.append(
            f"{side:>14} longest completed: {lg[side]['longest_completed']} (stopped by {lg[side]['stopped_by']})"
        )
    return "\n".join(lines)


def best(runs: list[dict]) -> dict:
    return min(runs, key=lambda run: run["attribute_s"])


def table(res: dict) -> str:
    head = (f"{'tokens':>6} {'features':>8} {'nodes':>6} {'rel err':>9} {'max |d|':>9} {'max |A|':>8} "
            f"{'ours s':>7} {'ct s':>7} {'ours RSS+':>9} {'ct RSS+':>8} {'ours RSS':>8} {'ct RSS':>7}")  # fmt: skip
    lines = [head, "-" * len(head)]
    for r in res["runs"]:
        c, o, t = r["compare"], r["ours"], r["circuit_tracer"]
        lines.append(f"{r['tokens']:>6} {c['features_ours']:>8} {c['nodes_shared']:>6} {c['rel_err']:>9.2e} "
                     f"{c['max_abs']:>9.2e} {c['max_abs_ct']:>8.3g} {o['attribute_s']:>7.2f} {t['attribute_s']:>7.2f} "
                     f"{o['rss_increase_mib']:>8.0f}M {t['rss_increase_mib']:>7.0f}M {o['rss_peak_mib']:>7.0f}M "
                     f"{t['rss_peak_mib']:>6.0f}M")  # fmt: skip
        if "gpu_peak_mib" in o and "gpu_peak_mib" in t:
            lines[-1] += (f"   GPU peak ours {o['gpu_peak_mib']:.0f}M (+{o['gpu_increase_mib']:.0f}M) "
                          f"ct {t['gpu_peak_mib']:.0f}M (+{t['gpu_increase_mib']:.0f}M)")  # fmt: skip
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
