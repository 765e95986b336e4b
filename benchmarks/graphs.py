"""Attribution graphs (issue 26): time and size of one prompt's graph, and its checks.

For one prompt of --tokens tokens on --model: the replacement model's build (one real run), the
attribution rows (logits, then up to --max-feature-nodes features as circuit-tracer picks them, in
batches of --batch-size), pruning and scores, the row-sum check, and the intervention check of
--check sampled features in the linear mode (where the graph is exact by construction) and live.
Transcoders come from --transcoders (every layer) or, without it, are random (TopK, --d-sae, --k:
for timing only; their features mean nothing and the live check with them says nothing).

    python benchmarks/graphs.py --model smollm2-135m --tokens 64 --max-feature-nodes 1024 --out graphs.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

TEXT = ("In the beginning God created the heaven and the earth. And the earth was without form, and void; and "
        "darkness was upon the face of the deep. And the Spirit of God moved upon the face of the waters. And God "
        "said, Let there be light: and there was light. And God saw the light, that it was good: and God divided")  # fmt: skip
# the other prompts of RESULTS.md's trained-transcoder runs (--prompt json / eiffel)
PROMPTS = {"genesis": TEXT,
           "json": 'The json module provides an API similar to pickle for converting in-memory Python objects to a serialized representation known as JavaScript Object Notation (JSON). Unlike pickle, JSON has the benefit of having implementations in many languages (especially JavaScript), making it suitable for inter-application communication. JSON is probably most widely used for communicating between the web server and client',
           "eiffel": "The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris, France. It is named after the engineer Gustave Eiffel, whose company designed and built the tower from 1887 to 1889. Locally nicknamed the Iron Lady, it was constructed as the centrepiece of the 1889 World's Fair, and to crown the centennial anniversary of the French Revolution. Although initially criticised by some of France's leading artists"}  # fmt: skip


def random_transcoders(model, d_sae: int, k: int, seed: int = 0):
    from interp.features import Dictionary, DictionaryConfig
    from interp.features.formats import model_fingerprint

    d, L = model.info.d_model, model.info.n_layers
    cfg = DictionaryConfig(site="mlp", layers=list(range(L)), d_in=d, d_out=d, d_sae=d_sae, k=k, model=model_fingerprint(model))
    tc = Dictionary(cfg)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        tc.W_enc.copy_(torch.randn(tc.W_enc.shape, generator=gen) * d**-0.5)
        tc.W_dec.copy_(torch.randn(tc.W_dec.shape, generator=gen) * 0.05)
    return tc


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--tokens", type=int, default=64, help="prompt length, BOS included")
    ap.add_argument("--transcoders", default=None, help="folder with every layer (default: random ones)")
    ap.add_argument("--d-sae", type=int, default=2048)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--max-feature-nodes", type=int, default=1024)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--check", type=int, default=16)
    ap.add_argument("--check-modes", default="linear,live", help="comma list: linear, norms, frozen, live")
    ap.add_argument("--check-seed", type=int, default=0)
    ap.add_argument("--check-scale", type=float, default=0.0, help="each sampled feature's activation times this (0: off)")
    ap.add_argument("--check-out", default=None, help="JSON: every sampled node's predicted and measured effects")
    ap.add_argument("--text", default=None, help="the prompt (default: --prompt's); cut to --tokens tokens")
    ap.add_argument("--prompt", default="genesis", choices=sorted(PROMPTS), help="a named prompt (default genesis)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default=None)
    ap.add_argument("--save-graph", default=None, help="torch.save the graph's nodes, adjacency, values, constants")
    args = ap.parse_args(argv)

    from interp import load
    from interp.features import load as load_dict
    from interp.graphs import intervene, prune
    from interp.graphs.attribute import attribute, check_rows
    from interp.graphs.replacement import build

    torch.set_num_threads(min(2, torch.get_num_threads()))
    model = load(args.model, device=args.device)
    tokens = model.to_tokens(args.text or PROMPTS[args.prompt])[0][: args.tokens]
    tc = load_dict(args.transcoders, model) if args.transcoders else random_transcoders(model, args.d_sae, args.k)
    res = {"model": model.info.name, "tokens": int(tokens.numel()), "transcoders": args.transcoders or
           f"random TopK d_sae={args.d_sae} k={args.k}", "threads": torch.get_num_threads()}  # fmt: skip
    t0 = time.perf_counter()
    R = build(model, tc, tokens)
    res["build_s"] = time.perf_counter() - t0
    t0, c0, res["load_avg_1m_before"] = time.perf_counter(), time.process_time(), os.getloadavg()[0]
    g = attribute(model, tc, tokens, batch_size=args.batch_size, max_feature_nodes=args.max_feature_nodes, replacement=R)
    res["attribute_s"], res["attribute_cpu_s"] = time.perf_counter() - t0, time.process_time() - c0
    res["load_avg_1m_after"] = os.getloadavg()[0]
    res |= {"active_features": g.settings.get("active_features", g.n_features), "feature_nodes": g.n_features,
            "nodes": g.n_nodes, "logits": g.n_logits, "nonzero_edges": int((g.adjacency != 0).sum())}  # fmt: skip
    res["row_sum_max_abs_err"] = check_rows(g, atol=1e-2, rtol=1e-3)
    if args.save_graph:
        keep = ("features", "activations", "adjacency", "values", "constants", "logit_tokens")
        torch.save({k: getattr(g, k) for k in keep}, args.save_graph)
    t0 = time.perf_counter()
    p = prune.prune(g)
    res["replacement_score"], res["completeness_score"] = prune.scores(g)
    res |= {"prune_s": time.perf_counter() - t0, "pruned_nodes": int(p.nodes.sum()), "pruned_edges": int(p.edges.sum())}
    infl, L = p.influence.double(), g.n_layers
    total = float(infl[: g.logit_start].sum())
    feat = torch.zeros(L, dtype=torch.float64).index_add_(0, g.features[:, 0].long(), infl[: g.n_features])
    err = infl[g.error_start : g.token_start].reshape(L, g.n_pos).sum(1)
    res["influence_share"] = {"tokens": float(infl[g.token_start : g.logit_start].sum()) / total,
                              "features_by_layer": [round(float(v) / total, 5) for v in feat],
                              "errors_by_layer": [round(float(v) / total, 5) for v in err]}  # fmt: skip
    res["prompt_start"], res["top_logit"] = g.str_tokens[:8], [g.logit_strs[0], float(g.logit_probs[0])]
    if args.check:
        if args.max_feature_nodes is not None and g.n_features < res["active_features"]:
            print("note: a capped graph's prediction leaves out the dropped features' paths", file=sys.stderr)
        t0 = time.perf_counter()
        modes = tuple(m.strip() for m in args.check_modes.split(",") if m.strip())
        rep = intervene.check(model, R, g, n=args.check, modes=modes, seed=args.check_seed, scale=args.check_scale)
        res["check_s"] = time.perf_counter() - t0
        res["check"] = {m: {"pearson": r["pearson"], "max_gap": r["max_gap"]} for m, r in rep["modes"].items()}
        res["check_predicted_max_abs"] = max(abs(x) for x in rep["predicted"])
        if args.check_out:
            rep["describe"] = [g.describe(i) for i in intervene.sample_features(g, args.check, args.check_seed)]
            Path(args.check_out).write_text(json.dumps(rep, indent=1))
    print(json.dumps(res, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
