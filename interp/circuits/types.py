"""The vocabulary of circuits: the graph (interp.circuits.graph, re-exported here), edge scores,
faithfulness curves, intervals, the modes, and the two faithfulness formulas.

Faithfulness, two formulas with two names: `normalized_faithfulness` f(C) = (m(C) - m(empty)) /
(m(full) - m(empty)), MIB's (Mueller et al. 2025), what curves, CPR and CMD are made of
(interp.circuits.faithfulness); `logit_diff_ratio` F(C) / F(M), Wang et al. 2022's share of the full
model's logit difference with everything else mean-ablated (interp.circuits.evaluate).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from interp.circuits.graph import (  # noqa: F401  (re-exported: the graph is part of the vocabulary)
    NODE_KINDS,
    READER_KINDS,
    Edge,
    Graph,
    Node,
    NodeKind,
    Reader,
    ReaderKind,
    prune,
)
from interp.errors import WorkbenchError
from interp.stats import Interval  # the vocabulary's interval (interp.stats makes them)
from interp.types import (  # noqa: F401  (re-exported: the modes, checked in interp.types.check_mode)
    CORRUPTIONS,
    EDGE_ABLATIONS,
    RANKINGS,
    Corruption,
    EdgeAblation,
    Ranking,
    check_mode,
)

# -- faithfulness: the two formulas ------------------------------------------------------------------


def normalized_faithfulness(m_circuit, m_empty, m_full):
    """MIB's f = (m(C) - m(empty)) / (m(full) - m(empty)) (floats or tensors alike)."""
    return (m_circuit - m_empty) / (m_full - m_empty)


def logit_diff_ratio(f_circuit, f_model):
    """Wang et al.'s F(C) / F(M): the circuit's logit difference over the full model's."""
    return f_circuit / f_model


# -- edge scores ---------------------------------------------------------------------------------------


@dataclass
class EdgeScores:
    """One score per edge of `graph` (in its edge order), with where they came from."""

    graph: Graph
    scores: Float[Tensor, "edge"]  # float32, on the CPU
    method: str  # a name in interp.circuits.methods' registry
    task: str
    metric: str
    n_prompts: int  # scoring prompts
    clean_metric: float  # mean metric on the clean prompts
    corrupted_metric: float  # mean metric on the corrupted prompts
    steps: int | None = None  # EAP-IG steps
    at: str = "clean"  # EAP: where the gradient was taken
    extra: dict = field(default_factory=dict)

    def order(self, ranking: str = "abs") -> Tensor:
        """Edge indices, strongest first: by |score| ('abs') or by score ('signed', positive first)."""
        check_mode("ranking", ranking)
        key = self.scores.abs() if ranking == "abs" else self.scores
        return torch.argsort(key, descending=True, stable=True)

    def circuit(self, n: int, ranking: str = "abs", pruned: bool = True) -> Bool[Tensor, "edge"]:
        """The top `n` edges (optionally only those on a path from the embedding to the logits)."""
        if not 0 <= n <= self.graph.n_edges:
            raise WorkbenchError(f"a circuit of {n} edges: choose 0..{self.graph.n_edges}")
        keep = torch.zeros(self.graph.n_edges, dtype=torch.bool)
        keep[self.order(ranking)[:n]] = True
        return prune(self.graph, keep) if pruned else keep

    def top(self, k: int = 20, ranking: str = "abs") -> list[tuple[str, str, float]]:
        """The k strongest edges as (src, dst, score)."""
        out = []
        for i in self.order(ranking)[:k].tolist():
            e = self.graph.edge(i)
            out.append((e.src.name, e.dst.name, float(self.scores[i])))
        return out


# -- faithfulness curves ---------------------------------------------------------------------------


@dataclass
class Curve:
    """`normalized_faithfulness` over circuit sizes on held-out prompts."""

    percents: list[float]  # circuit sizes, % of the graph's edges
    n_requested: list[int]  # top-n edges asked for
    n_edges: list[int]  # edges left after pruning
    faithfulness: list[float]  # f per size
    lo: list[float]  # bootstrap 2.5 % per size
    hi: list[float]  # bootstrap 97.5 %
    cpr: float  # area under f
    cmd: float  # area under |1 - f|
    cpr_ci: tuple[float, float]
    cmd_ci: tuple[float, float]
    m_full: float  # mean metric, nothing ablated
    m_empty: float  # mean metric, everything ablated
    m_circuit: list[float]  # mean metric per size
    ranking: str
    pruned: bool
    ablation: str
    n_heldout: int
    per_prompt: Tensor | None = field(default=None, repr=False)  # [size batch] metric values

    def at(self, percent: float) -> Interval:
        """f at one of the sizes with its interval (unpacks as f, lo, hi)."""
        i = self.percents.index(percent)
        return Interval(self.faithfulness[i], self.lo[i], self.hi[i])

    def points(self) -> list[dict]:
        return [{"percent": p, "faithfulness": f, "lo": lo, "hi": hi, "n_edges": n}
                for p, f, lo, hi, n in zip(self.percents, self.faithfulness, self.lo, self.hi, self.n_edges)]  # fmt: skip

    def to_json(self) -> dict:
        d = asdict(self)
        d.pop("per_prompt")
        d["points"] = self.points()
        return d

    @classmethod
    def from_json(cls, d: dict) -> Curve:
        fields = {k: v for k, v in d.items() if k in cls.__dataclass_fields__ and k != "per_prompt"}
        fields["cpr_ci"], fields["cmd_ci"] = tuple(fields["cpr_ci"]), tuple(fields["cmd_ci"])
        return cls(**fields)
