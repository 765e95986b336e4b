"""A circuit for any task in one call: scores -> faithfulness curves -> exact check -> files.

`find_circuit` scores every edge on the task's scoring prompts (EAP-IG, EAP or exact patching),
measures the faithfulness curve on the held-out prompts twice, as MIB does (edges ranked by signed
score for CPR, by |score| for CMD; the |score| curve is the one shown and quoted), and patches the
top edges exactly (on the scoring prompts, where the estimates came from) so the estimate can be
set beside the truth. `write_circuit` writes edges.json and the figures (offline HTML).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from interp.circuits.ablate import ABLATIONS, Ablator
from interp.circuits.attribute import EdgeScores, attribute, check_method
from interp.circuits.edges import edge_effects
from interp.circuits.faithfulness import MIB_PERCENTS, Curve, faithfulness_curve
from interp.data.tasks import TaskSplit
from interp.errors import WorkbenchError
from interp.io import write_json
from interp.types import Progress

if TYPE_CHECKING:
    from interp.models import Model

HEADLINE = 5.0  # the size quoted in one line: faithfulness at 5 % of the edges


@dataclass
class CircuitReport:
    """Everything `interp circuit` prints and writes."""

    model: str
    split: TaskSplit
    scores: EdgeScores
    curve: Curve  # edges ranked by |score| (CMD's curve, the one shown)
    curve_signed: Curve  # edges ranked by signed score (CPR's curve)
    exact: list[dict] = field(default_factory=list)  # top edges: src, dst, estimate, exact
    seed: int = 0

    @property
    def cpr(self) -> float:
        return self.curve_signed.cpr

    @property
    def cmd(self) -> float:
        return self.curve.cmd

    def headline(self) -> tuple[float, float, float]:
        """(f, lo, hi) at 5 % of the edges on the |score| curve."""
        return self.curve.at(HEADLINE)

    def circuit(self, percent: float, ranking: str = "abs"):
        """The circuit (pruned top-n) at one of the curve's sizes, as an edge mask."""
        curve = self.curve if ranking == "abs" else self.curve_signed
        return self.scores.circuit(int(percent / 100 * self.scores.graph.n_edges), ranking, curve.pruned)

    def to_json(self) -> dict:
        g, s = self.scores.graph, self.scores
        order = s.order("abs").tolist()
        points = lambda c: [{"percent": p, "faithfulness": f, "lo": lo, "hi": hi, "n_edges": n}  # noqa: E731
                            for p, f, lo, hi, n in zip(c.percents, c.faithfulness, c.lo, c.hi, c.n_edges)]  # fmt: skip
        f, lo, hi = self.headline()
        return {
            "model": self.model,
            "task": self.split.name,
            "metric": s.metric,
            "corruption": self.split.score.corruption,  # how the corrupted prompts were made (IOI), else None
            "heldout_corruption": self.split.heldout.corruption,
            "method": s.method,
            "steps": s.steps,
            "n_prompts": len(self.split.score),
            "n_heldout": len(self.split.heldout),
            "seed": self.seed,
            "ablation": self.curve.ablation,
            "pruned": self.curve.pruned,
            "nodes": [n.name for n in g.nodes],
            "n_nodes": g.n_nodes,
            "n_edges": g.n_edges,
            "clean_metric": s.clean_metric,
            "corrupted_metric": s.corrupted_metric,
            "heldout_full_metric": self.curve.m_full,
            "heldout_empty_metric": self.curve.m_empty,
            "edges": [{"src": (e := g.edge(i)).src.name, "dst": e.dst.name, "score": float(s.scores[i])} for i in order],
            "curve": points(self.curve),
            "curve_signed": points(self.curve_signed),
            "cpr": self.cpr,
            "cmd": self.cmd,
            "cpr_ci": list(self.curve_signed.cpr_ci),
            "cmd_ci": list(self.curve.cmd_ci),
            "areas": {"abs": {"cpr": self.curve.cpr, "cmd": self.curve.cmd},
                      "signed": {"cpr": self.curve_signed.cpr, "cmd": self.curve_signed.cmd}},  # fmt: skip
            "faithfulness_at_5pct": {"faithfulness": f, "lo": lo, "hi": hi,
                                     "signed": dict(zip(("faithfulness", "lo", "hi"), self.curve_signed.at(HEADLINE)))},
            "exact_check": self.exact,
        }


def check_settings(method: str, steps: int, ablation: str, exact_top: int) -> None:
    """Refuse bad settings before any model work."""
    check_method(method, steps)
    if ablation not in ABLATIONS:
        raise WorkbenchError(f"unknown ablation {ablation!r}; choose {' or '.join(ABLATIONS)}")
    if exact_top < 0:
        raise WorkbenchError(f"the exact check needs 0 or more edges (got {exact_top})")


def exact_check(model: Model, scores: EdgeScores, split: TaskSplit, k: int, progress: Progress | None = None) -> list[dict]:
    """The k strongest edges (|score|) with their exact patched effects on the scoring prompts."""
    if k == 0:
        return []
    top = scores.order("abs")[:k]
    if scores.method == "exact":
        exact = scores.scores
    else:
        exact = edge_effects(model, split.score, top, progress=progress).scores
    g = scores.graph
    return [{"src": g.edge(i).src.name, "dst": g.edge(i).dst.name, "estimate": float(scores.scores[i]),
             "exact": float(exact[i])} for i in top.tolist()]  # fmt: skip


def find_circuit(
    model: Model,
    split: TaskSplit,
    method: str = "eap-ig",
    steps: int = 5,
    ablation: str = "counterfactual",
    pruned: bool = True,
    exact_top: int = 20,
    batch_size: int = 80,
    n_boot: int = 1000,
    seed: int = 0,
    percents=MIB_PERCENTS,
    progress: Progress | None = None,
) -> CircuitReport:
    """Score, measure and check a circuit for one task (see the module docstring)."""
    check_settings(method, steps, ablation, exact_top)
    if HEADLINE not in [float(p) for p in percents]:
        percents = sorted({*map(float, percents), HEADLINE})

    def stage(name: str):
        return None if progress is None else (lambda done, total, msg: progress(done, total, f"{name}: {msg}"))

    scores = attribute(model, split.score, method, steps, batch_size=batch_size, progress=stage("scores"))
    ab = Ablator(model, split.heldout, ablation, split.score, scores.graph)
    curve = faithfulness_curve(model, scores, split.heldout, percents, "abs", pruned, ablation, split.score, n_boot, seed,
                               ablator=ab, progress=stage("faithfulness, |score| ranking"))  # fmt: skip
    signed = faithfulness_curve(model, scores, split.heldout, percents, "signed", pruned, ablation, split.score, n_boot,
                                seed, ablator=ab, progress=stage("faithfulness, signed ranking"))  # fmt: skip
    exact = exact_check(model, scores, split, exact_top, stage("exact check"))
    return CircuitReport(model.info.name, split, scores, curve, signed, exact, seed)


def write_circuit(report: CircuitReport, out: str | Path, n_graph_edges: int = 400) -> list[Path]:
    """edges.json, curve.html (both rankings), graph.html (the 5 % circuit) and, with an exact
    check, exact.html into `out`. edges.json is written last, so a folder holding it is complete."""
    from interp.viz.circuits import edge_graph, exact_check_figure, faithfulness_figure
    from interp.viz.html import write_figure

    out = Path(out)
    s = report.scores
    name = f"{s.method}{f' ({s.steps} steps)' if s.steps else ''} on {report.split.name}, {report.model}"
    written = [write_figure(faithfulness_figure({"|score| ranking": report.curve, "signed ranking": report.curve_signed},
                                                f"Faithfulness on held-out prompts: {name}"), out / "curve.html")]  # fmt: skip
    keep = report.circuit(HEADLINE)
    written.append(write_figure(edge_graph(s.graph, s.scores, keep, f"Circuit at {HEADLINE:g}% of edges: {name}",
                                           max_edges=n_graph_edges), out / "graph.html"))  # fmt: skip
    if report.exact:
        fig = exact_check_figure([r["estimate"] for r in report.exact], [r["exact"] for r in report.exact],
                                 [f"{r['src']}->{r['dst']}" for r in report.exact], f"{s.method} estimate vs exact patching")  # fmt: skip
        written.append(write_figure(fig, out / "exact.html"))
    written.append(write_json(out / "edges.json", report.to_json(), indent=1))
    return written


def circuit_heads(scores: EdgeScores, keep: torch.Tensor) -> list[tuple[int, int]]:
    """The attention heads whose output a circuit (edge mask) uses, as (layer, head) by layer. After
    pruning every such head is also reached from the embedding."""
    g = scores.graph
    heads = {(e.src.layer, e.src.head) for e in map(g.edge, keep.nonzero().flatten().tolist()) if e.src.kind == "head"}
    return sorted(heads)


def read_scores(path: str | Path, graph) -> EdgeScores:
    """The edge scores an `interp circuit` run wrote (DIR/edges.json or the file itself), back in
    `graph`'s edge order, so curves can be re-measured (another ablation, unpruned circuits, other
    held-out prompts) without scoring again. A file from another model's graph is refused."""
    import json

    path = Path(path)
    path = path / "edges.json" if path.is_dir() else path
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise WorkbenchError(f"cannot read edge scores from {path}: {e}") from None
    if data.get("n_edges") != graph.n_edges or len(data.get("edges", [])) != graph.n_edges:
        raise WorkbenchError(f"{path} holds {data.get('n_edges')} edges but this model's graph has {graph.n_edges}; "
                             "read it with the model it was written for")  # fmt: skip
    writers = {n.name: i for i, n in enumerate(graph.writers)}
    readers = {r.name: i for i, r in enumerate(graph.readers)}
    flat = {(s, d): i for i, (s, d) in enumerate(zip(graph.src.tolist(), graph.dst.tolist()))}
    scores = torch.full((graph.n_edges,), float("nan"))
    for e in data["edges"]:
        try:
            scores[flat[(writers[e["src"]], readers[e["dst"]])]] = float(e["score"])
        except KeyError:
            raise WorkbenchError(f"{path}: edge {e['src']}->{e['dst']} is not in this model's graph") from None
    if bool(scores.isnan().any()):
        raise WorkbenchError(f"{path} lists some edges twice and misses others; write it again with interp circuit")
    return EdgeScores(graph, scores, data["method"], data["task"], data["metric"], data["n_prompts"],
                      data["clean_metric"], data["corrupted_metric"], data.get("steps"))  # fmt: skip
