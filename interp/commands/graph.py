"""`interp graph`: the attribution graph of one prompt over transcoder features (interp.graphs).

Writes into --out (atomically, as a whole): graph.json (the pruned graph's nodes and edges, its
scores and thresholds, the supernodes of --supernodes, and the whole adjacency for a reload),
graph.html (the graph to explore offline: interp.viz.graph_html), circuit-tracer/<slug>.json with
graph-metadata.json (the graph as circuit-tracer's and Neuronpedia's frontends open it), and with
--check N, checks.json (N sampled features switched off in the real model, or scaled by --check-scale,
beside the graph's prediction, in each intervention mode). With --qk N and --qk-at, graph.json carries a "qk" section:
attention explained (interp.graphs.qk), the N strongest attention-mediated kept edges' head scores and
the scores named by --qk-at, each split into (query node, key node) terms.
With --auto-supernodes [THRESHOLD] (instead of --supernodes), the kept features are grouped
automatically (interp.graphs.autogroup): the grouping goes into graph.json's supernodes and
supernodes.json, and supernodes-faithfulness.json sets each group switched off together in the real
model (attention frozen; and in the graph's own linear model) beside the graph's predictions.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

from interp.commands import helped, step_bar
from interp.errors import WorkbenchError

OUR_FILES = {"graph.json", "graph.html", "circuit-tracer", "checks.json"}
OUR_FILES |= {"supernodes.json", "supernodes-faithfulness.json"}  # --auto-supernodes


def add_parser(sub) -> None:
    p = sub.add_parser("graph", help="attribution graph of a prompt over transcoder features", **helped(
        "Build the attribution graph of one prompt (transcoders replace every MLP, attention and norms frozen), "
        "prune it by influence on the top logits and write graph.json, an explorable offline graph.html and "
        "circuit-tracer's frontend JSON.",
        "interp graph --model smollm2-135m --prompt 'The capital of France is' --transcoders runs/tc --out runs/graph",
        "interp graph --model smollm2-135m --prompt 'one two three' --transcoders runs/tc --out runs/g --check 32",
        "interp graph --model smollm2-135m --prompt 'The capital of France is' --transcoders runs/tc --out runs/g2 "
        "--supernodes groups.json"))  # fmt: skip
    p.add_argument("--model", required=True, help="model spec (interp models lists them)")
    p.add_argument("--prompt", required=True, help="the text (BOS is prepended)")
    p.add_argument(
        "--transcoders", required=True, help="transcoder folder with every layer (ours, SAELens or sparsify)"
    )
    p.add_argument("--out", required=True, help="output folder (replaced as a whole)")
    p.add_argument("--max-logits", type=int, default=10, help="most logit nodes (default 10)")
    p.add_argument(
        "--logit-prob", type=float, default=0.95, help="logits kept until their probability sums to this (0.95)"
    )
    p.add_argument("--node-threshold", type=float, default=0.8, help="share of influence the kept nodes hold (0.8)")
    p.add_argument("--edge-threshold", type=float, default=0.98, help="share of influence the kept edges hold (0.98)")
    p.add_argument(
        "--max-feature-nodes", type=int, default=None, help="rows for at most this many features (default all)"
    )
    p.add_argument("--batch-size", type=int, default=256, help="target rows per backward pass (default 256)")
    p.add_argument(
        "--check", type=int, default=0, help="switch off N sampled features and compare (default 0: no check)"
    )
    p.add_argument("--check-scale", type=float, default=0.0, metavar="S",
                   help="--check scales each feature's activation by S instead (default 0: off; e.g. 0.5)")
    p.add_argument(
        "--slug", default=None, help="the graph's name in circuit-tracer's frontend (default: from the prompt)"
    )
    p.add_argument("--supernodes", default=None, metavar="FILE.json",
                   help="group nodes: a JSON object of name -> list of node ids (F<layer>.<feature>@<pos>, "
                        "err<layer>@<pos>); each is drawn as one node whose edges are its members' summed")  # fmt: skip
    p.add_argument("--auto-supernodes", type=float, nargs="?", const=0.5, default=None, metavar="THRESHOLD",
                   help="group the kept features automatically (decoder cosine, co-activation, shared edges; "
                        "average linkage merging while the mean similarity >= THRESHOLD in (0, 1], default 0.5), "
                        "write supernodes.json and switch each group off to measure its faithfulness "
                        "(supernodes-faithfulness.json); not with --supernodes")  # fmt: skip
    p.add_argument("--auto-layer-band", type=int, default=None, metavar="N",
                   help="an automatic supernode spans at most N layers beyond its first (default: any layers)")  # fmt: skip
    p.add_argument("--auto-texts", default=None, metavar="FILE",
                   help="co-activation over these texts (one a line) instead of the prompt's positions")  # fmt: skip
    p.add_argument("--qk", type=int, default=0, metavar="N",
                   help="explain the attention of the N strongest attention-mediated kept edges (QK attribution)")  # fmt: skip
    p.add_argument("--qk-at", action="append", default=[], metavar="LAYER,HEAD,QUERY,KEY",
                   help="explain this head's score between two positions (QK attribution); repeatable")  # fmt: skip
    p.add_argument("--qk-top", type=int, default=10, help="pairs and nodes per side listed per QK entry (10)")
    p.add_argument("--device", default=None)
    p.set_defaults(func=run)


def _qk_places(specs: list[str]) -> list[tuple[int, int, int, int]]:
    out = []
    for spec in specs:
        try:
            layer, head, query, key = (int(x) for x in spec.split(","))
        except ValueError:
            raise WorkbenchError(f"--qk-at {spec!r}: give LAYER,HEAD,QUERY,KEY as integers, e.g. 1,0,5,2") from None
        out.append((layer, head, query, key))
    return out


def _slug(prompt: str) -> str:
    words = "".join(c if c.isalnum() else "-" for c in prompt.lower()).split("-")
    return "-".join(w for w in words if w)[:40] or "graph"


def _auto_inputs(args) -> list[str] | None:
    """--auto-supernodes' options checked (one-line errors before anything is loaded); the texts of --auto-texts."""
    if args.auto_supernodes is None:
        if args.auto_layer_band is not None or args.auto_texts is not None:
            raise WorkbenchError("--auto-layer-band and --auto-texts go with --auto-supernodes")
        return None
    from interp.graphs.autogroup import check_threshold

    check_threshold(args.auto_supernodes, "--auto-supernodes' threshold")
    if args.supernodes is not None:
        raise WorkbenchError(
            "give --supernodes or --auto-supernodes, not both (the automatic grouping replaces a hand one)"
        )
    if args.auto_layer_band is not None and args.auto_layer_band < 0:
        raise WorkbenchError(f"--auto-layer-band must be >= 0, got {args.auto_layer_band}")
    if args.auto_texts is None:
        return None
    path = Path(args.auto_texts).expanduser()
    try:
        texts = [line for line in path.read_text().splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as e:
        raise WorkbenchError(f"cannot read --auto-texts {str(path)!r} ({type(e).__name__})") from None
    if not texts:
        raise WorkbenchError(f"--auto-texts {str(path)!r} holds no text (one text a line)")
    return texts


def _auto_supernodes(args, texts, model, tc, R, g, pruned) -> tuple[dict, dict]:
    """(the proposed grouping, what supernodes-faithfulness.json holds: the proposal's settings and
    the grouping's faithfulness report) (interp.graphs.autogroup)."""
    from interp.graphs import autogroup

    profiles = None
    if texts is not None:
        nodes = autogroup.candidates(g, pruned.nodes, pruned.influence)
        profiles = autogroup.text_profiles(model, tc, g, nodes, texts)
    proposal = autogroup.propose(g, R, pruned, args.auto_supernodes, layer_band=args.auto_layer_band,
                                 profiles=profiles, top_token=autogroup.model_top_token(model))  # fmt: skip
    groups = proposal["supernodes"]
    report = autogroup.faithfulness(model, R, g, groups)
    keep = ("threshold", "weights", "layer_band", "features")
    extra = {"coactivation": "texts" if texts is not None else "prompt positions", "n_texts": len(texts or [])}
    return groups, {**{k: proposal[k] for k in keep}, **extra, "supernodes": groups, "faithfulness": report}


def _checked_inputs(args):
    """Every argument checked before any model work: (output folder, --qk-at places, the --supernodes
    grouping's shape, --auto-supernodes' texts, the transcoder folder)."""
    from interp.graphs.supernodes import check_supernodes, read_supernodes
    from interp.io import check_dir_target, check_replaceable

    if args.qk < 0 or args.qk_top < 1:
        raise WorkbenchError("--qk must be >= 0 and --qk-top >= 1")
    qk_places = _qk_places(args.qk_at)
    if args.check < 0 or args.batch_size < 1 or (args.max_feature_nodes is not None and args.max_feature_nodes < 0):
        raise WorkbenchError("--check and --max-feature-nodes must be >= 0 and --batch-size >= 1")
    if not math.isfinite(args.check_scale) or args.check_scale == 1.0:
        raise WorkbenchError(f"--check-scale must be a finite number other than 1 (1 changes nothing), got {args.check_scale}")
    for name, t in (("--node-threshold", args.node_threshold), ("--edge-threshold", args.edge_threshold)):
        if not 0 <= t <= 1:
            raise WorkbenchError(f"{name} must be between 0 and 1, got {t}")
    out = check_dir_target(args.out)
    check_replaceable(out, OUR_FILES)
    groups = None
    if args.supernodes is not None:  # its shape now, its node ids once the graph exists (before anything is written)
        groups = check_supernodes(read_supernodes(args.supernodes), None, f"--supernodes {args.supernodes}")
    texts = _auto_inputs(args)  # --auto-supernodes checked before anything is loaded
    tc_dir = Path(args.transcoders).expanduser()
    if not tc_dir.is_dir():
        raise WorkbenchError(
            f"no transcoder folder at {str(tc_dir)!r}; train them with `interp features train --site mlp`"
        )
    return out, qk_places, groups, texts, tc_dir


def _write(out: Path, graph: dict, view, title: str, g, pruned, slug: str, groups, checks, faith) -> None:
    """graph.json, graph.html, circuit-tracer's files and the optional checks / supernodes, atomically."""
    from interp.graphs import export
    from interp.io import write_dir, write_json
    from interp.viz.graph_html import write_graph_html

    def fill(tmp: Path) -> None:
        write_json(tmp / "graph.json", graph)
        write_graph_html(view, tmp / "graph.html", title)
        tracer = tmp / "circuit-tracer"
        tracer.mkdir()
        data = export.tracer_dict(g, pruned, slug, supernodes=groups)
        (tracer / f"{slug}.json").write_text(json.dumps(data, indent=1))
        (tracer / "graph-metadata.json").write_text(json.dumps({"graphs": [data["metadata"]]}, indent=1))
        if checks is not None:
            (tmp / "checks.json").write_text(json.dumps(checks, indent=1))
        if faith is not None:
            (tmp / "supernodes.json").write_text(json.dumps(groups, indent=1))
            (tmp / "supernodes-faithfulness.json").write_text(json.dumps(faith, indent=1))

    write_dir(out, fill)


def _report(args, out: Path, g, pruned, scores, seconds: float, worst: float, checks, groups, faith, qk, slug: str) -> None:
    """What the run printed: the graph's size, its checks, the supernodes and the QK attributions."""
    top = ", ".join(f"{t!r} {p:.3f}" for t, p in zip(g.logit_strs, g.logit_probs.tolist()))
    print(f"{len(g.tokens)} tokens, {g.n_features} feature nodes, {g.n_nodes} nodes; logits: {top}")
    print(f"attribution {seconds:.1f} s; rows add up to their values within {worst:.2g}")
    print(f"pruned (nodes {args.node_threshold}, edges {args.edge_threshold}): {int(pruned.nodes.sum())} nodes, "
          f"{int(pruned.edges.sum())} edges; replacement score {scores[0]:.3f}, completeness {scores[1]:.3f}")  # fmt: skip
    if checks is not None:
        for mode, r in checks["modes"].items():
            corr = "n/a" if r["pearson"] is None else f"{r['pearson']:.3f}"
            print(
                f"check ({len(checks['nodes'])} features off, mode {mode}): correlation {corr}, largest gap {r['max_gap']:.3g}"
            )
    if groups:
        print(f"{len(groups)} supernodes: {', '.join(groups)} (drawn as one node each, edges summed over members)")
    if faith is not None:
        from interp.graphs.autogroup import table

        print(f"automatic supernodes (threshold {faith['threshold']}): {len(groups)} over {len(faith['features'])} "
              f"kept features; wrote {out}/supernodes.json and {out}/supernodes-faithfulness.json")  # fmt: skip
        print(table(faith["faithfulness"]))
    if qk is not None:
        for x in [*qk["edges"], *qk["scores"]]:
            top = x["top_pairs"][0] if x["top_pairs"] else None
            lead = f"; largest term {top['query_node']} x {top['key_node']} {top['term']:.3g}" if top else ""
            print(f"QK layer {x['layer']} head {x['head']} ({x['query']} -> {x['key']}): score {x['score']:.4g} "
                  f"(real {x['real_score']:.4g}){lead}")  # fmt: skip
    print(f"wrote {out}/graph.json, {out}/graph.html and {out}/circuit-tracer/{slug}.json")


def run(args) -> int:
    from interp import load
    from interp.features import load as load_dict
    from interp.graphs import export, intervene, prune
    from interp.graphs.attribute import attribute, check_rows
    from interp.graphs.replacement import build
    from interp.graphs.supernodes import check_supernodes
    from interp.graphs.view import graph_view

    out, qk_places, groups, texts, tc_dir = _checked_inputs(args)
    faith = None
    model = load(args.model, device=args.device)
    tokens = model.to_tokens(args.prompt)[0]  # refuses an empty prompt or one over the context
    if qk_places:
        from interp.graphs.qk import check_place

        for place in qk_places:
            check_place(model, len(tokens), *place)
    tc = load_dict(tc_dir, model, device=model.device)
    t0 = time.perf_counter()
    R = build(model, tc, tokens)
    bar, progress = step_bar("attribution")
    try:
        g = attribute(model, tc, args.prompt, args.max_logits, args.logit_prob, args.batch_size,
                      max_feature_nodes=args.max_feature_nodes, replacement=R, progress=progress)  # fmt: skip
    finally:
        bar.close()
    seconds = time.perf_counter() - t0
    worst = check_rows(g, atol=1e-3, rtol=1e-3)
    pruned = prune.prune(g, args.node_threshold, args.edge_threshold)
    scores = prune.scores(g)
    checks = intervene.check(model, R, g, n=args.check, scale=args.check_scale) if args.check else None
    slug = args.slug or _slug(args.prompt)
    if groups is not None:
        kinds = {g.describe(i)["id"]: g.kind(i) for i in range(g.n_nodes)}
        groups = check_supernodes(groups, kinds, f"--supernodes {args.supernodes}")
    if args.auto_supernodes is not None:
        groups, faith = _auto_supernodes(args, texts, model, tc, R, g, pruned)
    qk = None
    if args.qk or qk_places:
        from interp.graphs import qk as qkmod

        qk = {"edges": qkmod.edge_qk(model, R, g, pruned.edges, args.qk, args.qk_top),
              "scores": [qkmod.explain(model, R, g, *place).to_dict(g, args.qk_top) for place in qk_places]}  # fmt: skip
    kept = pruned.nodes.nonzero()[:, 0].tolist()
    graph = export.graph_dict(g, pruned, scores, supernodes=groups, extra=export.feature_tokens(model, tc, g, kept),
                              qk=qk)  # fmt: skip
    title = f"Attribution graph of {args.prompt[:80]!r} ({model.info.name})"
    _write(out, graph, graph_view(graph), title, g, pruned, slug, groups, checks, faith)
    _report(args, out, g, pruned, scores, seconds, worst, checks, groups, faith, qk, slug)
    return 0
