"""One JSON format for edge scores and faithfulness curves (edges.json): the one writer and the one
reader, used by `interp circuit`, the dashboard and the notebooks.

    data = circuit_json(scores, {"abs": curve, "signed": curve_signed}, exact, meta)
    write_edges("runs/circuit", data)               # atomic (interp.io)
    scores, curves, data = read_edges("runs/circuit", graph)

The file holds every edge with its score (strongest |score| first, by writer and input name), the
scoring run (method, steps, task, metric, prompts, clean/corrupted metric), each curve whole
(`Curve.to_json`) and as points, CPR/CMD with their intervals, the random baseline ("random": random
circuits of the same sizes, per draw and their spread), the exact check (each checked edge with its
group: top, random or bottom) and its summary (Spearman and Pearson over the checked edges), and what `meta` adds
(model, corruption, seed, ...). `read_edges` puts the scores back in the graph's edge order and refuses
a file written for another model's graph.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from interp.circuits.exact_check import summary
from interp.circuits.types import Curve, EdgeScores, Graph
from interp.errors import WorkbenchError
from interp.io import write_json

FORMULA = "(m(C) - m(empty)) / (m(full) - m(empty))"  # interp.circuits.types.normalized_faithfulness
HEADLINE = 5.0  # the size quoted in one line: faithfulness at 5 % of the edges


def scores_json(s: EdgeScores) -> dict:
    g = s.graph
    return {
        "method": s.method, "steps": s.steps, "at": s.at, "task": s.task, "metric": s.metric, "n_prompts": s.n_prompts,
        "clean_metric": s.clean_metric, "corrupted_metric": s.corrupted_metric,
        "nodes": [n.name for n in g.nodes], "n_nodes": g.n_nodes, "n_edges": g.n_edges,
        "edges": [{"src": (e := g.edge(i)).src.name, "dst": e.dst.name, "score": float(s.scores[i])}
                  for i in s.order("abs").tolist()],
    }  # fmt: skip


def circuit_json(scores: EdgeScores, curves: dict[str, Curve], exact: list[dict], meta: dict, random=None) -> dict:
    """edges.json's content: `meta` first, then the scores, the curves ('abs' is the one quoted), the
    random baseline beside them (a RandomBaseline, MIB's Random row) and the exact check with its
    rank correlation."""
    out = {**meta, **scores_json(scores), "faithfulness_formula": FORMULA}
    shown = curves["abs"]
    out.update(ablation=shown.ablation, pruned=shown.pruned, heldout_full_metric=shown.m_full,
               heldout_empty_metric=shown.m_empty, n_heldout=shown.n_heldout)  # fmt: skip
    out["curves"] = {k: c.to_json() for k, c in curves.items()}
    out["curve"] = shown.points()
    if "signed" in curves:
        signed = curves["signed"]
        out["curve_signed"] = signed.points()
        out["cpr"], out["cmd"] = signed.cpr, shown.cmd
        out["cpr_ci"], out["cmd_ci"] = list(signed.cpr_ci), list(shown.cmd_ci)
    out["areas"] = {k: {"cpr": c.cpr, "cmd": c.cmd} for k, c in curves.items()}
    if HEADLINE in shown.percents:
        f, lo, hi = shown.at(HEADLINE)
        out["faithfulness_at_5pct"] = {"faithfulness": f, "lo": lo, "hi": hi}
        if "signed" in curves:
            out["faithfulness_at_5pct"]["signed"] = dict(zip(("faithfulness", "lo", "hi"), curves["signed"].at(HEADLINE)))
    if random is not None:
        out["random"] = random.to_json()
        if HEADLINE in random.percents:
            out["random"]["faithfulness_at_5pct"] = dict(zip(("faithfulness", "lo", "hi"), random.at(HEADLINE)))
    out["exact_check"] = exact
    out["exact_check_summary"] = summary(exact)
    return out


def write_edges(folder: str | Path, data: dict) -> Path:
    """edges.json into `folder`, atomically."""
    return write_json(Path(folder) / "edges.json", data, indent=1)


def read_edges(path: str | Path, graph: Graph) -> tuple[EdgeScores, dict[str, Curve], dict]:
    """(the scores in `graph`'s edge order, the curves, the whole file) of an edges.json (or its
    folder). A file from another model's graph is refused."""
    path = Path(path)
    path = path / "edges.json" if path.is_dir() else path
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise WorkbenchError(f"cannot read edge scores from {path}: {e}") from None
    if data.get("n_edges") != graph.n_edges or len(data.get("edges", [])) != graph.n_edges:
        raise WorkbenchError(f"{path} holds {data.get('n_edges')} edges but this model's graph has {graph.n_edges}; "
                             "read it with the model it was written for")  # fmt: skip
    scores = torch.full((graph.n_edges,), float("nan"))
    for e in data["edges"]:
        try:
            scores[graph.index_by_names(e["src"], e["dst"])] = float(e["score"])
        except KeyError:
            raise WorkbenchError(f"{path}: edge {e['src']}->{e['dst']} is not in this model's graph") from None
    if bool(scores.isnan().any()):
        raise WorkbenchError(f"{path} lists some edges twice and misses others; write it again with interp circuit")
    s = EdgeScores(graph, scores, data["method"], data["task"], data["metric"], data["n_prompts"], data["clean_metric"],
                   data["corrupted_metric"], data.get("steps"), data.get("at") or "clean")  # fmt: skip
    curves = {k: Curve.from_json(c) for k, c in data.get("curves", {}).items()}
    return s, curves, data
