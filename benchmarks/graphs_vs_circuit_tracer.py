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
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from circuit_tracer_run import PeakRSS
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


def run_ours(model, tc, tokens: torch.Tensor, s: dict, repeats: int) -> tuple[dict, dict]:
    from interp.graphs.attribute import attribute, check_rows

    runs, g = [], None
    for _ in range(repeats):
        with PeakRSS() as mem:
            t0 = time.perf_counter()
            g = attribute(model, tc, tokens, max_n_logits=s["max_n_logits"], desired_logit_prob=s["desired_logit_prob"],
                          batch_size=s["batch_size"], max_feature_nodes=s["max_feature_nodes"])  # fmt: skip
            wall = time.perf_counter() - t0
        runs.append({"attribute_s": wall, "rss_before": mem.start, "rss_peak": mem.peak})
    data = {"tokens": g.tokens, "features": g.features.numpy(), "activations": g.activations.numpy(),
            "logit_tokens": g.logit_tokens.numpy(), "logit_probs": g.logit_probs.numpy(),
            "adjacency": g.adjacency.numpy()}  # fmt: skip
    return data, {"runs": runs, "row_sum_max_abs_err": check_rows(g, atol=1e-3, rtol=1e-3), "active_features":
                  int(g.settings.get("active_features", g.n_features))}  # fmt: skip


def run_ct(work: Path, model_dir: Path, tc_dir: Path, tokens: torch.Tensor, s: dict, repeats: int, python: str
           ) -> tuple[dict, dict]:  # fmt: skip
    np.save(work / "tokens.npy", tokens.numpy())
    (work / "settings.json").write_text(json.dumps({**s, "repeats": repeats}))
    out = work / "ct.npz"
    t0 = time.perf_counter()
    proc = subprocess.run([python, str(HERE / "circuit_tracer_run.py"), "--model", str(model_dir), "--transcoders",
                           str(tc_dir), "--tokens", str(work / "tokens.npy"), "--settings", str(work / "settings.json"),
                           "--out", str(out)], capture_output=True, text=True, check=False,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})  # fmt: skip
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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", default="16,64", help="prompt lengths (BOS included), comma-separated")
    ap.add_argument("--n-layers", type=int, default=4)
    ap.add_argument("--d-model", type=int, default=64)
    ap.add_argument("--n-heads", type=int, default=4)
    ap.add_argument("--n-kv-heads", type=int, default=2)
    ap.add_argument("--d-mlp", type=int, default=256)
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
    ap.add_argument("--ct-python", default=CT_PYTHON)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if not Path(args.ct_python).is_file():
        raise SystemExit(f"no circuit-tracer venv at {args.ct_python}: run bash benchmarks/circuit_tracer_env.sh first")
    torch.set_num_threads(args.threads)

    from interp import load
    from interp.graphs.tracer_format import write_tracer_transcoders

    lengths = [int(x) for x in args.tokens.split(",")]
    settings = {"max_n_logits": args.max_n_logits, "desired_logit_prob": args.desired_logit_prob,
                "batch_size": args.batch_size, "max_feature_nodes": args.max_feature_nodes, "dtype": "float32",
                "threads": args.threads}  # fmt: skip
    res = {"date": time.strftime("%Y-%m-%d"), "machine": f"CPU, {os.cpu_count()} cores (shared)", "settings": settings,
           "model": {"n_layers": args.n_layers, "d_model": args.d_model, "n_heads": args.n_heads,
                     "n_kv_heads": args.n_kv_heads, "d_mlp": args.d_mlp, "init": args.init, "vocab": "GPT-2 (50257)"},
           "transcoders": {"activation": "topk", "d_sae": args.d_sae, "k": args.k, "skip": args.skip},
           "runs": []}  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="graphs_vs_ct_") as tmp:
        tmp = Path(tmp)
        # TransformerLens 2.x reads a folder whose name says "llama" or "gemma" by a path that needs the hub
        model_dir = save_tiny_llama(tmp / "tiny_gqa", args.n_layers, args.d_model, args.n_heads, args.n_kv_heads,
                                    args.d_mlp, max(lengths), args.init)  # fmt: skip
        assert not any(w in str(model_dir).lower() for w in ("llama", "gemma"))
        model = load(str(model_dir), device="cpu")
        tc = make_transcoders(model, args.d_sae, args.k, args.skip)
        write_tracer_transcoders(tc, tmp / "transcoders", scan="tiny-random")
        ids = model.tokenizer((TEXT + " ") * 40)["input_ids"]
        for n in lengths:
            tokens = torch.tensor([model.bos_token_id] + ids[: n - 1])
            work = tmp / f"len{n}"
            work.mkdir()
            ours, ours_meta = run_ours(model, tc, tokens, settings, args.repeats)
            ct, ct_meta = run_ct(work, model_dir, tmp / "transcoders", tokens, settings, args.repeats, args.ct_python)
            assert [int(t) for t in ct["tokens"]] == tokens.tolist(), "circuit-tracer read other tokens"
            cmp = compare(ours, ct, args.n_layers)
            row = {"tokens": n, "compare": cmp, "topk_rows_with_nonpositive": topk_nonpositive(model, tc, tokens),
                   "ours": {**ours_meta, "attribute_s": best(ours_meta["runs"])["attribute_s"],
                            "rss_peak_mib": max(r["rss_peak"] for r in ours_meta["runs"]) / 2**20,
                            "rss_increase_mib": max(r["rss_peak"] - r["rss_before"] for r in ours_meta["runs"]) / 2**20},
                   "circuit_tracer": {**ct_meta, "attribute_s": best(ct_meta["runs"])["attribute_s"],
                                      "rss_peak_mib": max(r["rss_peak"] for r in ct_meta["runs"]) / 2**20,
                                      "rss_increase_mib": max(r["rss_peak"] - r["rss_before"] for r in ct_meta["runs"]) / 2**20}}  # fmt: skip
            res["runs"].append(row)
            print(
                f"[{n} tokens] rel_err {cmp['rel_err']:.2e}  max_abs {cmp['max_abs']:.2e}  "
                f"ours {row['ours']['attribute_s']:.2f}s  ct {row['circuit_tracer']['attribute_s']:.2f}s",
                file=sys.stderr,
            )
    print(table(res))
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=1))
    return 0


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
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
