"""MIB's edge-score file (the circuit track's `importances.json`), written and read, so circuits found
here can be scored by MIB's own evaluation code and MIB's circuits scored here.

The layout is EAP-IG's `Graph.to_json` (Hanna et al. 2024), which MIB's circuit track reads:

    {"cfg":   {"n_layers": L, "n_heads": H, "parallel_attn_mlp": false, "d_model": D},
     "nodes": {"input": {"in_graph": true}, "a0.h0": {...}, "m0": {...}, ..., "logits": {"in_graph": true}},
     "edges": {"input->a0.h0<q>": {"score": 0.12, "in_graph": true}, "a0.h0->m0": {...},
               "m0->a1.h3<k>": {...}, "m29->logits": {...}, ...}}

Nodes are `input` (our `embed`), `a{layer}.h{head}`, `m{layer}` and `logits`; an edge is
`{writer}->{reader}`, where a reader is an MLP (`m{layer}`), the logits, or one query head's q, k or v
input (`a{layer}.h{head}<q|k|v>`). MIB's graph is *ungrouped*: every query head has its own k and v
input, also on grouped-query models. Ours (interp.circuits.graph) groups k and v per KV head, so one of
our k/v edges stands for `group` of MIB's (SmolLM2: 3). Across that difference:

- writing, a k/v edge's score is split equally over the query heads sharing the KV head (score /
  group each). Under EAP's linearization the grouped score *is* the sum of the ungrouped ones (the
  shared input's gradient is the sum of its query heads' gradients), so the split keeps each edge's
  total and the file's ranking compares like with like;
- reading, the k/v scores of a KV head's query heads are *summed* back: the exact inverse of the
  split, and the grouped estimate of an ungrouped file written by MIB's own methods.

On a model without grouped-query attention (and on an ungrouped graph) the mapping is one to one.
The file's own `interp` block says which model, method and grouping it came from; MIB's reader
ignores keys it does not know. `in_graph` marks one circuit (by default the pruned top 5 % by
|score|, the one `interp circuit` quotes); MIB's evaluation ranks the scores itself.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import torch
from jaxtyping import Bool
from torch import Tensor

from interp.circuits.types import EdgeScores, Graph, Node, Reader
from interp.errors import WorkbenchError
from interp.io import write_json

FILE = "mib_edges.json"  # what `interp circuit` writes into --out
_HEAD = re.compile(r"a(\d+)\.h(\d+)")
_READER = re.compile(r"a(\d+)\.h(\d+)<([qkv])>")
_MLP = re.compile(r"m(\d+)")


def node_name(node: Node) -> str:
    """MIB's name of one of our writers (or the logits): the embedding is MIB's `input`."""
    return "input" if node.kind == "embed" else node.name


def reader_names(graph: Graph, reader: Reader) -> list[str]:
    """MIB's names of the inputs one of our inputs stands for: one per query head a k/v input feeds."""
    if reader.kind in ("q", "k", "v"):
        return [f"a{reader.layer}.h{h}<{reader.kind}>" for h in graph.heads_fed(reader)]
    return [reader.name]  # "m{layer}" and "logits" are MIB's names already


def _check_layout(graph: Graph) -> None:
    if not graph.has_mlp:
        raise WorkbenchError("MIB's graph has an MLP in every layer; an attention-only model has no MIB edge file")


def to_mib(scores: EdgeScores, keep: Bool[Tensor, "edge"] | None = None, d_model: int = 0,
           meta: dict | None = None) -> dict:  # fmt: skip
    """MIB's edge-score file for `scores` (see the module docstring); `keep` marks the edges in_graph
    (default: none), `d_model` fills MIB's cfg, `meta` goes into the file's `interp` block."""
    g = scores.graph
    _check_layout(g)
    keep = torch.zeros(g.n_edges, dtype=torch.bool) if keep is None else keep.to("cpu", torch.bool)
    edges: dict[str, dict] = {}
    for i, (s, d) in enumerate(zip(g.src.tolist(), g.dst.tolist())):
        src, names = node_name(g.writers[s]), reader_names(g, g.readers[d])
        share = float(scores.scores[i]) / len(names)
        for name in names:
            edges[f"{src}->{name}"] = {"score": share, "in_graph": bool(keep[i])}
    used = torch.zeros(len(g.writers), dtype=torch.bool)
    used[g.src[keep]] = True
    nodes = {node_name(n): {"in_graph": bool(used[w])} for w, n in enumerate(g.writers)}
    nodes["logits"] = {"in_graph": True}
    info = {"model": None, "method": scores.method, "task": scores.task, "metric": scores.metric,
            "n_prompts": scores.n_prompts, "clean_metric": scores.clean_metric,
            "corrupted_metric": scores.corrupted_metric, "steps": scores.steps,
            "kv_heads": g.n_kv, "query_heads_per_kv_head": g.group, "our_edges": g.n_edges, "mib_edges": len(edges),
            "kv_split": ("each k/v edge of a KV head wrote score / group to every query head of its group; "
                         "read back as their sum") if g.group > 1 else "none (one to one)",
            **(meta or {})}  # fmt: skip
    cfg = {"n_layers": g.n_layers, "n_heads": g.n_heads, "parallel_attn_mlp": False, "d_model": d_model}
    return {"cfg": cfg, "nodes": nodes, "edges": edges, "interp": info}


def write_mib(path: str | Path, scores: EdgeScores, keep: Bool[Tensor, "edge"] | None = None, d_model: int = 0,
              meta: dict | None = None) -> Path:  # fmt: skip
    """`to_mib` into `path`, atomically (interp.io)."""
    return write_json(Path(path), to_mib(scores, keep, d_model, meta))


def _parse(name: str, graph: Graph) -> tuple[int, list[tuple[int, int]]] | None:
    """(our writer index, [(our reader index, share)]) of a MIB edge name; None when it is not an
    edge of this graph (a name out of range or malformed)."""
    src, sep, dst = name.partition("->")
    if not sep:
        return None
    if src == "input":
        w = 0
    elif (m := _HEAD.fullmatch(src)) and int(m[1]) < graph.n_layers and int(m[2]) < graph.n_heads:
        w = graph.first_head(int(m[1])) + int(m[2])
    elif (m := _MLP.fullmatch(src)) and int(m[1]) < graph.n_layers:
        w = graph.mlp_writer(int(m[1]))
    else:
        return None
    if dst == "logits":
        r = graph.layer_readers(0, "logits")
    elif (m := _MLP.fullmatch(dst)) and int(m[1]) < graph.n_layers:
        r = graph.layer_readers(int(m[1]), "mlp")
    elif (m := _READER.fullmatch(dst)) and int(m[1]) < graph.n_layers and int(m[2]) < graph.n_heads:
        layer, head, kind = int(m[1]), int(m[2]), m[3]
        r = graph.layer_readers(layer, kind)[head if kind == "q" else graph.kv_of(head)][None]
    else:
        return None
    return w, int(r[0])


def _index(graph: Graph, got: tuple[int, int] | None) -> int | None:
    if got is None:
        return None
    try:
        return graph.index_by_names(graph.writers[got[0]].name, graph.readers[got[1]].name)
    except KeyError:  # e.g. a head feeding an earlier layer
        return None


def from_mib(data: dict, graph: Graph, where: str = "the MIB file") -> tuple[Tensor, Tensor, dict]:
    """(scores, in_graph mask, the `interp` block) in `graph`'s edge order from MIB's layout; k/v
    scores of a KV head's query heads summed, an edge in_graph when any of its shares is. A file for
    another model (layers, heads, names out of range, edges missing) is refused in one line."""
    _check_layout(graph)
    if not isinstance(data, dict) or not {"cfg", "nodes", "edges"} <= set(data):
        raise WorkbenchError(f"{where} is not a MIB edge file (it needs the keys cfg, nodes and edges)")
    cfg = data["cfg"]
    if cfg.get("n_layers") != graph.n_layers or cfg.get("n_heads") != graph.n_heads or cfg.get("parallel_attn_mlp"):
        raise WorkbenchError(f"{where} was written for a model with {cfg.get('n_layers')} layers of {cfg.get('n_heads')} "
                             f"heads; this model has {graph.n_layers} of {graph.n_heads}: read it with the model it was written for")  # fmt: skip
    scores = torch.zeros(graph.n_edges, dtype=torch.float64)
    seen = torch.zeros(graph.n_edges, dtype=torch.long)
    keep = torch.zeros(graph.n_edges, dtype=torch.bool)
    for name, e in data["edges"].items():
        i = _index(graph, _parse(name, graph))
        if i is None:
            raise WorkbenchError(
                f"{where}: edge {name!r} is not in this model's graph; read it with the model it was written for"
            )
        try:
            score = float(e["score"])
        except (KeyError, TypeError, ValueError):
            raise WorkbenchError(f"{where}: edge {name!r} has no numeric score") from None
        if not math.isfinite(score):
            raise WorkbenchError(f"{where}: edge {name!r} scores {score}; every edge needs a finite score")
        scores[i] += score
        seen[i] += 1
        keep[i] |= bool(e.get("in_graph", False))
    shares = torch.tensor([len(reader_names(graph, graph.readers[d])) for d in graph.dst.tolist()])
    if not torch.equal(seen, shares):
        wrong = (seen != shares).nonzero().flatten()
        bad, more = int(wrong[0]), f" (and {len(wrong) - 1} more of our edges)" if len(wrong) > 1 else ""
        raise WorkbenchError(f"{where} lists {int(seen[bad])} of the {int(shares[bad])} MIB edges of our "
                             f"{graph.edge(bad).name}{more}; it was written for another model's graph")  # fmt: skip
    return scores.float(), keep, data.get("interp", {})


def read_mib(path: str | Path, model_or_graph) -> EdgeScores:
    """The scores of a MIB edge file (ours or MIB's own) as EdgeScores of `model`'s graph (see
    `from_mib`); the circuit its in_graph flags mark rides along in `extra["in_graph"]`."""
    graph = model_or_graph if isinstance(model_or_graph, Graph) else Graph.of(model_or_graph)
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise WorkbenchError(f"cannot read a MIB edge file from {path}: {e}") from None
    scores, keep, info = from_mib(data, graph, str(path))
    number = lambda k: float("nan") if info.get(k) is None else float(info[k])
    return EdgeScores(graph, scores, info.get("method") or "mib", info.get("task") or "mib", info.get("metric") or "unknown",
                      int(info.get("n_prompts") or 0), number("clean_metric"), number("corrupted_metric"),
                      info.get("steps"), extra={"in_graph": keep, "source": str(path)})  # fmt: skip
