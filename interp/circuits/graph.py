"""The computational graph circuits are made of: nodes, the inputs they read, and edges.

Nodes are the *writers* into the residual stream and the final readout:
- `embed`: the input embedding, i.e. everything the first block receives (`blocks.0.hook_resid_pre`:
  token embedding plus learned positions where a model has them; positions are the same in the
  clean and the corrupted run, so only the tokens' part ever differs);
- `head` (layer, query head): one attention head, writing z_h @ W_O[h] (b_O belongs to no head);
- `mlp` (layer): one MLP, writing `hook_mlp_out`;
- `logits`: the readout, reading the final residual stream (the input of the final norm).

Every node but the embedding reads the residual stream through one or more *inputs* (`Reader`):
- `q` (layer, query head): the residual stream its query is computed from;
- `k` / `v` (layer, KV head): the residual stream a *key/value head* reads. On GQA/MQA models
  (SmolLM2: 9 query heads share 3 key/value heads) keys and values are computed once per KV head
  and shared by its group of query heads h with h // (n_heads // n_kv_heads) == g, so the k or v
  input is a property of the KV head, not of a query head: patching it changes the keys (values)
  every query head of the group reads. On MHA models the KV head is the query head itself, and
  the graph is the usual one (Hanna et al. 2024, MIB);
- `mlp` (layer): the MLP's input (the residual stream after the layer's attention);
- `logits`: the final residual stream.

An *edge* runs from a writer to every input that reads the residual stream after that writer
wrote to it: attention inputs of layer l read the embedding and every head and MLP of layers
< l; the MLP of layer l also reads layer l's heads (sequential blocks); the logits read every
writer. Each input is a separate copy of the residual stream (`hook_q_input`, `hook_k_input`,
`hook_v_input`, `hook_mlp_in`, the final norm's input), so an edge can be intervened on alone:
its reader's input becomes input - a(writer) + a'(writer).

`Graph.of(model)` enumerates everything in one fixed order: writers (embed, then per layer its
heads and its MLP), inputs (per layer q of each query head, k and v of each KV head, the MLP;
the logits last) and edges (a boolean `mask[writer, reader]`, flattened writer-major into
`src`/`dst` index tensors that every score vector follows).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Literal, get_args

import torch
from jaxtyping import Bool, Int
from torch import Tensor

from interp.errors import WorkbenchError

if TYPE_CHECKING:
    from interp.models import Model, ModelInfo

NodeKind = Literal["embed", "head", "mlp", "logits"]
NODE_KINDS: tuple[str, ...] = get_args(NodeKind)
ReaderKind = Literal["q", "k", "v", "mlp", "logits"]
READER_KINDS: tuple[str, ...] = get_args(ReaderKind)


@dataclass(frozen=True, order=True)
class Node:
    """A writer into the residual stream, or the logits."""

    kind: NodeKind
    layer: int | None = None  # None for embed and logits
    head: int | None = None  # query head, for kind == "head"

    @property
    def name(self) -> str:
        if self.kind == "head":
            return f"a{self.layer}.h{self.head}"
        if self.kind == "mlp":
            return f"m{self.layer}"
        return self.kind

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True, order=True)
class Reader:
    """One input of a node: a query head's q, a KV head's k or v, an MLP's input, the logits."""

    kind: ReaderKind
    layer: int | None = None  # None for the logits
    head: int | None = None  # the query head for q, the KV head for k and v

    @property
    def name(self) -> str:
        if self.kind == "q":
            return f"a{self.layer}.h{self.head}<q>"
        if self.kind in ("k", "v"):
            return f"a{self.layer}.kv{self.head}<{self.kind}>"
        if self.kind == "mlp":
            return f"m{self.layer}"
        return "logits"

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True)
class Edge:
    """Writer `src` -> input `dst`."""

    src: Node
    dst: Reader

    @property
    def name(self) -> str:
        return f"{self.src.name}->{self.dst.name}"

    def __str__(self) -> str:
        return self.name


def _stage_of_writer(node: Node) -> int:
    """Writers are ordered in stages: embed 0, heads of layer l 2l+1, MLP of layer l 2l+2."""
    if node.kind == "embed":
        return 0
    return 2 * node.layer + (1 if node.kind == "head" else 2)


def _stage_of_reader(reader: Reader, n_layers: int) -> int:
    """An input reads every writer of a lower stage: attention inputs of layer l stage 2l+1,
    the MLP input of layer l stage 2l+2 (it reads layer l's heads), the logits last."""
    if reader.kind == "logits":
        return 2 * n_layers + 1
    return 2 * reader.layer + (2 if reader.kind == "mlp" else 1)


@dataclass(frozen=True)
class Graph:
    """Every node, input and edge of one model (see the module docstring for the order)."""

    n_layers: int
    n_heads: int  # query heads per layer
    n_kv: int  # key/value heads per layer (== n_heads on MHA models)
    has_mlp: bool  # False for attention-only models

    @classmethod
    def of(cls, model: Model) -> Graph:
        return cls.from_info(model.info, model.bridge.cfg)

    @classmethod
    def from_info(cls, info: ModelInfo, cfg=None) -> Graph:
        if cfg is not None and getattr(cfg, "parallel_attn_mlp", False):
            raise WorkbenchError(
                f"{info.name} runs attention and MLP in parallel; edge circuits need sequential blocks"
            )
        if info.n_heads % info.n_kv_heads:
            raise WorkbenchError(f"{info.name}: {info.n_heads} query heads do not split into {info.n_kv_heads} KV groups")
        return cls(info.n_layers, info.n_heads, info.n_kv_heads, not info.attn_only)

    # -- enumeration -------------------------------------------------------------------------------
    @property
    def group(self) -> int:
        """Query heads per KV head."""
        return self.n_heads // self.n_kv

    def kv_of(self, head: int) -> int:
        return head // self.group

    @cached_property
    def writers(self) -> tuple[Node, ...]:
        out = [Node("embed")]
        for layer in range(self.n_layers):
            out += [Node("head", layer, h) for h in range(self.n_heads)]
            if self.has_mlp:
                out.append(Node("mlp", layer))
        return tuple(out)

    @cached_property
    def readers(self) -> tuple[Reader, ...]:
        out = []
        for layer in range(self.n_layers):
            out += [Reader("q", layer, h) for h in range(self.n_heads)]
            out += [Reader("k", layer, g) for g in range(self.n_kv)]
            out += [Reader("v", layer, g) for g in range(self.n_kv)]
            if self.has_mlp:
                out.append(Reader("mlp", layer))
        out.append(Reader("logits"))
        return tuple(out)

    @property
    def nodes(self) -> tuple[Node, ...]:
        return (*self.writers, Node("logits"))

    @cached_property
    def mask(self) -> Bool[Tensor, "writer reader"]:
        """True where writer w feeds input r."""
        w = torch.tensor([_stage_of_writer(n) for n in self.writers])
        r = torch.tensor([_stage_of_reader(x, self.n_layers) for x in self.readers])
        return w[:, None] < r[None, :]

    @cached_property
    def _flat(self) -> tuple[Tensor, Tensor]:
        src, dst = self.mask.nonzero(as_tuple=True)
        return src, dst

    @property
    def src(self) -> Int[Tensor, "edge"]:
        """Writer index of each edge (edges are ordered writer-major)."""
        return self._flat[0]

    @property
    def dst(self) -> Int[Tensor, "edge"]:
        """Input index of each edge."""
        return self._flat[1]

    @property
    def n_edges(self) -> int:
        return len(self.src)

    @property
    def n_nodes(self) -> int:
        return len(self.writers) + 1

    def edge(self, i: int) -> Edge:
        return Edge(self.writers[int(self.src[i])], self.readers[int(self.dst[i])])

    def edges(self) -> list[Edge]:
        W, R = self.writers, self.readers
        return [Edge(W[s], R[d]) for s, d in zip(self.src.tolist(), self.dst.tolist())]

    def edge_names(self) -> list[str]:
        return [e.name for e in self.edges()]

    @cached_property
    def _edge_index(self) -> dict[tuple[int, int], int]:
        return {(s, d): i for i, (s, d) in enumerate(zip(self.src.tolist(), self.dst.tolist()))}

    def index_of(self, edge: Edge) -> int:
        """The position of `edge` in the edge order (a WorkbenchError for an edge not in the graph)."""
        try:
            return self._edge_index[(self.writers.index(edge.src), self.readers.index(edge.dst))]
        except (ValueError, KeyError):
            raise WorkbenchError(f"edge {edge.name} is not in this model's graph") from None

    def parse_edge(self, name: str) -> Edge:
        """An edge from its name, e.g. 'a3.h1->a5.kv0<k>' or 'embed->logits'."""
        src, _, dst = name.partition("->")
        writers = {n.name: n for n in self.writers}
        readers = {r.name: r for r in self.readers}
        if src not in writers or dst not in readers:
            raise WorkbenchError(f"edge {name!r} is not in this model's graph (names look like 'a3.h1->a5.kv0<k>')")
        edge = Edge(writers[src], readers[dst])
        self.index_of(edge)
        return edge

    # -- structure ------------------------------------------------------------------------------
    def writer_index(self) -> dict[Node, int]:
        return {n: i for i, n in enumerate(self.writers)}

    def layer_readers(self, layer: int, kind: str) -> Int[Tensor, "reader"]:
        """Indices of the inputs of `kind` ('q', 'k', 'v', 'mlp') at `layer`, or the logits (layer ignored)."""
        idx = [i for i, r in enumerate(self.readers) if r.kind == kind and (kind == "logits" or r.layer == layer)]
        return torch.tensor(idx, dtype=torch.long)

    def n_writers_before(self, reader: Reader) -> int:
        """How many writers (a prefix of `writers`) feed this input."""
        stage = _stage_of_reader(reader, self.n_layers)
        return sum(1 for n in self.writers if _stage_of_writer(n) < stage)

    @cached_property
    def feeds(self) -> Bool[Tensor, "writer reader"]:
        """True where input r belongs to node w (a head's q, its KV head's k and v; an MLP's input).
        The logits (not a writer) own the last input."""
        out = torch.zeros(len(self.writers), len(self.readers), dtype=torch.bool)
        where = self.writer_index()
        for r, reader in enumerate(self.readers):
            if reader.kind == "q":
                out[where[Node("head", reader.layer, reader.head)], r] = True
            elif reader.kind in ("k", "v"):
                for h in range(reader.head * self.group, (reader.head + 1) * self.group):
                    out[where[Node("head", reader.layer, h)], r] = True
            elif reader.kind == "mlp":
                out[where[Node("mlp", reader.layer)], r] = True
        return out

    def summary(self) -> dict:
        return {"nodes": self.n_nodes, "edges": self.n_edges, "inputs": len(self.readers),
                "layers": self.n_layers, "heads": self.n_heads, "kv_heads": self.n_kv}  # fmt: skip


def prune(graph: Graph, keep: Bool[Tensor, "edge"]) -> Bool[Tensor, "edge"]:
    """The edges of `keep` that lie on a path from the embedding to the logits.

    A node stays while it has a kept incoming edge (the embedding always counts as having one)
    and a kept outgoing edge; an edge stays while its writer stays and some node it feeds stays
    (the logits always stay). Repeated until nothing changes, as EAP-IG's `Graph.prune` does."""
    src, dst = graph.src.to(keep.device), graph.dst.to(keep.device)
    feeds = graph.feeds.to(keep.device)  # [writer, reader]
    n_w = len(graph.writers)
    keep = keep.clone()
    while True:
        has_out = torch.zeros(n_w, dtype=torch.bool, device=keep.device)
        has_out[src[keep]] = True
        reader_in = torch.zeros(len(graph.readers), dtype=torch.bool, device=keep.device)
        reader_in[dst[keep]] = True
        has_in = (feeds & reader_in[None, :]).any(1)
        has_in[0] = True  # the embedding
        alive = has_out & has_in
        reader_alive = (feeds & alive[:, None]).any(0)
        reader_alive[-1] = True  # the logits
        new = keep & alive[src] & reader_alive[dst]
        if torch.equal(new, keep):
            return new
        keep = new


def greedy_order(graph: Graph, key: Tensor) -> Int[Tensor, "edge"]:
    """Every edge, in the order a greedy walk back from the logits takes them (Hanna et al.'s
    EAP-IG `apply_greedy`): the circuit starts as the logits alone; each step adds the edge of
    highest `key` among those into an input of a node already in the circuit, and the edge's
    writer joins the circuit (its q / k / v or MLP inputs open). The top-n circuit of this
    selection is the first n edges, so every prefix is connected to the logits (ties: lower edge
    index first). `key` is the ranking value per edge (|score| or the signed score)."""
    import heapq

    key = key.detach().float().cpu()
    if key.shape != (graph.n_edges,):
        raise WorkbenchError(f"greedy selection needs one key per edge ({graph.n_edges}), got {tuple(key.shape)}")
    dst = graph.dst.tolist()
    into: list[list[int]] = [[] for _ in graph.readers]
    for e, r in enumerate(dst):
        into[r].append(e)
    owned = [graph.feeds[w].nonzero()[:, 0].tolist() for w in range(len(graph.writers))]
    src, k = graph.src.tolist(), key.tolist()
    opened = [False] * len(graph.readers)
    joined = [False] * len(graph.writers)
    heap: list[tuple[float, int]] = []

    def open_input(r: int) -> None:
        if not opened[r]:
            opened[r] = True
            for e in into[r]:
                heapq.heappush(heap, (-k[e], e))

    open_input(len(graph.readers) - 1)  # the logits
    order = []
    while heap:
        _, e = heapq.heappop(heap)
        order.append(e)
        w = src[e]
        if not joined[w]:
            joined[w] = True
            for r in owned[w]:
                open_input(r)
    return torch.tensor(order, dtype=torch.long)
