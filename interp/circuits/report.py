"""A circuit for any task in one call: scores -> faithfulness curves -> random baseline -> exact
check -> files.

`find_circuit` scores every edge on the task's scoring prompts (EAP-IG, EAP or exact patching),
measures the faithfulness curve on the held-out prompts twice, as MIB does (edges ranked by signed
score for CPR, by |score| for CMD; the |score| curve is the one shown and quoted), measures random
circuits of the same sizes beside it (MIB's Random row: interp.circuits.faithfulness.random_baseline),
and patches some edges exactly (on the scoring prompts, where the estimates came from): the top ones
by |score|, some drawn at random and some from the bottom half (interp.circuits.exact_check), so the
estimate can be set beside the truth with a rank correlation. `write_circuit` writes edges.json, MIB's
edge file (interp.circuits.mib) and the figures (offline HTML).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from interp.circuits import exact_check as check
from interp.circuits import methods, mib
from interp.circuits.ablate import Ablator
from interp.circuits.draws import Pooled, check_draws, pooled, scoring_resamples
from interp.circuits.faithfulness import (
    MIB_PERCENTS,
    RandomBaseline,
    circuits_at,
    faithfulness_curve,
    heldout_ends,
    random_baseline,
)
from interp.circuits.io import HEADLINE, circuit_json, read_edges, write_edges
from interp.circuits.types import Curve, EdgeScores, Graph, Interval, check_mode
from interp.circuits.ungroup import GRAPH_HELP
from interp.circuits.verdict import circuit_verdict
from interp.data.task import TaskSplit
from interp.errors import WorkbenchError
from interp.types import Progress

if TYPE_CHECKING:
    from interp.models import Model


@dataclass
class CircuitReport:
    """Everything `interp circuit` prints and writes."""

    model: str
    split: TaskSplit
    scores: EdgeScores
    curve: Curve  # edges ranked by |score| (CMD's curve, the one shown)
    curve_signed: Curve  # edges ranked by signed score (CPR's curve)
    exact: list[dict] = field(default_factory=list)  # checked edges: src, dst, estimate, exact, group, rank
    seed: int = 0
    random: RandomBaseline | None = None  # MIB's Random row beside the curves (None: not measured)
    pooled: Pooled | None = None  # f per size with intervals over scoring draws and held-out prompts (draws > 1)
    graph_name: str = "grouped"  # which graph the edges are on (interp.circuits.ungroup.GRAPHS)

    @property
    def exact_summary(self) -> dict:
        """Spearman's and Pearson's correlation of estimate and exact effect over the checked edges."""
        return check.summary(self.exact)

    @property
    def cpr(self) -> float:
        return self.curve_signed.cpr

    @property
    def cmd(self) -> float:
        return self.curve.cmd

    def headline(self) -> Interval:
        """f at 5 % of the edges on the |score| curve, with its interval (unpacks as f, lo, hi)."""
        return self.curve.at(HEADLINE)

    def circuit(self, percent: float, ranking: str = "abs"):
        """The circuit (pruned top-n) at one of the curve's sizes, as an edge mask."""
        curve = self.curve if ranking == "abs" else self.curve_signed
        return self.scores.circuit(int(percent / 100 * self.scores.graph.n_edges), ranking, curve.pruned)

    def to_json(self) -> dict:
        """edges.json's content (interp.circuits.io)."""
        g = self.scores.graph
        meta = {"model": self.model, "corruption": self.split.score.corruption,  # how the corrupted prompts were made (IOI)
                "heldout_corruption": self.split.heldout.corruption, "seed": self.seed,
                "graph": {"name": self.graph_name, "about": GRAPH_HELP[self.graph_name], "n_nodes": g.n_nodes,
                          "n_edges": g.n_edges}}  # fmt: skip
        out = circuit_json(self.scores, {"abs": self.curve, "signed": self.curve_signed}, self.exact, meta, self.random)
        if self.pooled is not None:
            out["pooled"] = {"percents": self.curve.percents, **self.pooled.to_dict()}
        if HEADLINE in self.curve.percents:  # the verdict `interp circuit` prints, with its rule
            out["verdict"] = {"percent": HEADLINE, **circuit_verdict(self, HEADLINE).to_dict()}
        return out


def check_settings(method: str | None, steps: int, ablation: str, exact_top: int, batch_size: int = 80,
                   random_draws: int = 0, scoring_draws: int = 1, from_file: bool = False) -> None:  # fmt: skip
    """Refuse bad settings before any model work (`method` None: not checked; `from_file`: the scores are
    read from a file, so nothing can be rescored)."""
    check_draws(scoring_draws)
    if from_file and scoring_draws > 1:
        raise WorkbenchError("scoring draws rescore the scoring prompts; scores read from a file cannot be: "
                             "drop --scoring-draws or --scores")  # fmt: skip
    if method is not None:
        methods.check(method, methods.Options(steps=steps, batch_size=batch_size))
    check_mode("ablation", ablation)
    if exact_top < 0:
        raise WorkbenchError(f"the exact check needs 0 or more edges (got {exact_top})")
    if random_draws < 0:
        raise WorkbenchError(f"the random baseline needs 0 or more draws (got {random_draws})")


def exact_check(model: Model, scores: EdgeScores, split: TaskSplit, k: int, seed: int = 0,
                progress: Progress | None = None) -> list[dict]:  # fmt: skip
    """k edges (the top half by |score|, a quarter drawn from the rest, a quarter from the bottom half:
    interp.circuits.exact_check) with their exact patched effects on the scoring prompts, each row
    naming its group and its rank by |score| (0: the strongest)."""
    picked = check.checked_edges(scores, k, seed)
    if not picked:
        return []
    idx = torch.tensor([i for i, _ in picked])
    if scores.method == "exact":
        exact = scores.scores[idx]
    else:
        exact = check.exact_effects(model, split.score, idx, Ablator(model, split.score, "counterfactual", graph=scores.graph),
                                    progress)  # fmt: skip
    rank = torch.empty(scores.graph.n_edges, dtype=torch.long)
    rank[scores.order("abs")] = torch.arange(scores.graph.n_edges)
    g = scores.graph
    return [{"src": g.edge(i).src.name, "dst": g.edge(i).dst.name, "estimate": float(scores.scores[i]),
             "exact": float(exact[j]), "group": group, "rank": int(rank[i])}
            for j, (i, group) in enumerate(picked)]  # fmt: skip


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
    random_draws: int = 3,
    scores: EdgeScores | None = None,
    scoring_draws: int = 1,
    graph_name: str = "grouped",
) -> CircuitReport:
    """Score, measure and check a circuit for one task (see the module docstring). `scores` given
    (read from a file) skip the scoring; `random_draws` 0 skips the random baseline; `scoring_draws`
    > 1 rescores that many - 1 bootstrap resamples of the scoring prompts and pools them with the
    held-out prompts into the intervals of `pooled` (interp.circuits.draws; not with scores from a file).
    `graph_name` only labels the report: the model given is already on that graph."""
    check_settings(method if scores is None else None, steps, ablation, exact_top, batch_size, random_draws,
                   scoring_draws, from_file=scores is not None)  # fmt: skip
    if HEADLINE not in [float(p) for p in percents]:
        percents = sorted({*map(float, percents), HEADLINE})

    def stage(name: str):
        return None if progress is None else (lambda done, total, msg: progress(done, total, f"{name}: {msg}"))

    if scores is None:
        scores = methods.score_edges(model, split.score, method, steps, batch_size=batch_size, progress=stage("scores"))
    ab = Ablator(model, split.heldout, ablation, split.score, scores.graph)
    curve = faithfulness_curve(model, scores, split.heldout, percents, "abs", pruned, ablation, split.score, n_boot, seed,
                               ablator=ab, progress=stage("faithfulness, |score| ranking"))  # fmt: skip
    signed = faithfulness_curve(model, scores, split.heldout, percents, "signed", pruned, ablation, split.score, n_boot,
                                seed, ablator=ab, progress=stage("faithfulness, signed ranking"))  # fmt: skip
    rand = None
    if random_draws:
        rand = random_baseline(model, scores.graph, split.heldout, random_draws, percents, pruned, ablation, split.score,
                               seed, ablator=ab, progress=stage(f"random baseline, {random_draws} draws"))  # fmt: skip
    pool = None
    if scoring_draws > 1:
        per = [curve.per_prompt]
        draws = scoring_resamples(split.score, scoring_draws, seed)[1:]
        for d, task in enumerate(draws, 2):
            s = methods.score_edges(model, task, method, steps, batch_size=batch_size,
                                    progress=stage(f"scoring draw {d} of {scoring_draws}"))  # fmt: skip
            per.append(ab.run_many([k for _, k in circuits_at(s, curve.percents, "abs", pruned)]).float().cpu())
        pool = pooled(per, *heldout_ends(ab, scores.graph), n_boot, seed)
    exact = exact_check(model, scores, split, exact_top, seed, stage("exact check"))
    return CircuitReport(model.info.name, split, scores, curve, signed, exact, seed, rand, pool, graph_name)


def write_circuit(report: CircuitReport, out: str | Path, n_graph_edges: int = 400, d_model: int = 0) -> list[Path]:
    """edges.json, curve.html (both rankings and the random baseline), graph.html (the 5 % circuit),
    MIB's edge file (mib.FILE, the 5 % circuit in_graph; not for attention-only models) and, with an
    exact check, exact.html into `out`. edges.json is written last, so a folder holding it is complete."""
    from interp.viz.circuits import edge_graph, exact_check_figure, faithfulness_figure
    from interp.viz.html import write_figure

    out = Path(out)
    s = report.scores
    name = (f"{s.method}{f' ({s.steps} steps)' if s.steps else ''} on {report.split.name}, {report.model}, "
            f"{report.graph_name} graph ({s.graph.n_edges:,} edges)")  # fmt: skip
    curves = {"|score| ranking": report.curve, "signed ranking": report.curve_signed}
    written = [write_figure(faithfulness_figure(curves, f"Faithfulness on held-out prompts: {name}", random=report.random),
                            out / "curve.html")]  # fmt: skip
    keep = report.circuit(HEADLINE)
    written.append(write_figure(edge_graph(s.graph, s.scores, keep, f"Circuit at {HEADLINE:g}% of edges: {name}",
                                           max_edges=n_graph_edges), out / "graph.html"))  # fmt: skip
    if s.graph.has_mlp:
        written.append(mib.write_mib(out / mib.FILE, s, keep, d_model, {"model": report.model, "in_graph": f"the pruned "
                                     f"top {HEADLINE:g}% by |score|, the circuit interp circuit quotes"}))  # fmt: skip
    if report.exact:
        ex, agree = report.exact, report.exact_summary
        fig = exact_check_figure([r["estimate"] for r in ex], [r["exact"] for r in ex], [f"{r['src']}->{r['dst']}" for r in ex],
                                 f"{s.method} estimate vs exact patching (Spearman {agree['spearman']:.2f}, "
                                 f"Pearson {agree['pearson']:.2f}, {len(ex)} edges)", groups=[r.get("group") for r in ex])  # fmt: skip
        written.append(write_figure(fig, out / "exact.html"))
    written.append(write_edges(out, report.to_json()))
    return written


def circuit_heads(scores: EdgeScores, keep: torch.Tensor) -> list[tuple[int, int]]:
    """The attention heads whose output a circuit (edge mask) uses, as (layer, head) by layer. After
    pruning every such head is also reached from the embedding."""
    g = scores.graph
    heads = {(e.src.layer, e.src.head) for e in map(g.edge, keep.nonzero().flatten().tolist()) if e.src.kind == "head"}
    return sorted(heads)


def read_scores(path: str | Path, graph: Graph) -> EdgeScores:
    """The edge scores an `interp circuit` run wrote (DIR/edges.json or the file itself), back in
    `graph`'s edge order, so curves can be re-measured (another ablation, unpruned circuits, other
    held-out prompts) without scoring again. A file from another model's graph is refused."""
    return read_edges(path, graph)[0]
