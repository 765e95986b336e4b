"""The graph of a model's circuits: its nodes, the inputs they read, its edges, and where each lives on
the bridge (re-exported by interp.circuits.types, the vocabulary).

Nodes are the *writers* into the residual stream and the readout: `embed` (everything the first block
receives, `blocks.0.hook_resid_pre`), `head` (layer, query head: z_h @ W_O[h]; b_O belongs to no head),
`mlp` (layer: `hook_mlp_out`) and `logits` (reading the final residual stream). Every node but the
embedding reads the stream through *inputs* (`Reader`): a query head's `q`; a *KV head's* `k` / `v`
(on GQA models, SmolLM2's 9 query heads share 3 KV heads, keys and values are computed once per KV
head and shared by its group h // (n_heads // n_kv_heads) == g, so patching one changes what every
query head of the group reads: `Graph.heads_fed`; on MHA models this is the usual graph of Hanna et al.
2024 and MIB); an MLP's input (after its layer's attention); the logits'. An *edge* runs from a writer
to every input that reads the stream after it wrote (attention of layer l reads the embedding and
layers < l, the MLP of layer l also its own heads, the logits everything); intervening on one edge
alone, its input becomes input - a(writer) + a'(writer).

Sites: `Node.hook` is where a writer's output shows on the bridge, `Reader.hook` the bridge's own copy
of the stream an input reads (interp.bridge.split_inputs), `Reader.stream` the stream that copy
equals. `Graph.of(model)` enumerates in one fixed order: writers (embed, then per layer its heads and
its MLP), inputs (per layer its q heads, k and v KV heads and MLP; the logits last) and edges (a
boolean `mask[writer, reader]`, flattened writer-major into the `src`/`dst` every score vector follows).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Literal, get_args

import torch
from jaxtyping import Bool, Int
from torch import Tensor

from interp import hooks
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

    @property
    def hook(self) -> str:
        """Where the bridge shows this writer's output (a head's is z, times W_O[head])."""
        return {"embed": hooks.name("resid_pre", 0), "head": hooks.name("z", self.layer),
                "mlp": hooks.name("mlp_out", self.layer), "logits": hooks.name("final_in")}[self.kind]  # fmt: skip

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

    @property
    def hook(self) -> str:
        """The bridge's own residual copy this input reads (with interp.bridge.split_inputs on)."""
        if self.kind in ("q", "k", "v"):
            return hooks.name(f"{self.kind}_input", self.layer)
        return hooks.name("mlp_in", self.layer) if self.kind == "mlp" else hooks.name("final_in")

    @property
    def stream(self) -> str:
        """The residual stream that copy equals: resid_pre (attention), resid_mid (MLP), the final one."""
        if self.kind in ("q", "k", "v"):
            return hooks.name("resid_pre", self.layer)
        return hooks.name("resid_mid", self.layer) if self.kind == "mlp" else hooks.name("final_in")

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
    """An input reads every writer of a lower stage: attention inputs of layer l stage 2l+1, the MLP
    input of layer l stage 2l+2 (it reads layer l's heads), the logits last."""
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
            raise WorkbenchError(f"{info.name} runs attention and MLP in parallel; edge circuits need sequential blocks")
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

    def heads_fed(self, reader: Reader) -> list[int]:
        """The query heads whose output an input changes: a q input its own head, a k or v input the
        KV head's whole group (none for an MLP's input or the logits)."""
        if reader.kind == "q":
            return [reader.head]
        if reader.kind in ("k", "v"):
            return list(range(reader.head * self.group, (reader.head + 1) * self.group))
        return []

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

    def index_by_names(self, src: str, dst: str) -> int:
        """The position of the edge named `src`->`dst` (KeyError when the graph has none)."""
        return self._edge_index[(self._writer_names[src], self._reader_names[dst])]

    @cached_property
    def _writer_names(self) -> dict[str, int]:
        return {n.name: i for i, n in enumerate(self.writers)}

    @cached_property
    def _reader_names(self) -> dict[str, int]:
        return {r.name: i for i, r in enumerate(self.readers)}

    def parse_edge(self, name: str) -> Edge:
        """An edge from its name, e.g. 'a3.h1->a5.kv0<k>' or 'embed->logits'."""
        src, _, dst = name.partition("->")
        try:
            return self.edge(self.index_by_names(src, dst))
        except KeyError:
            raise WorkbenchError(f"edge {name!r} is not in this model's graph (names look like 'a3.h1->a5.kv0<k>')") from None

    # -- structure ------------------------------------------------------------------------------
    def writer_index(self) -> dict[Node, int]:
        return {n: i for i, n in enumerate(self.writers)}

    def layer_readers(self, layer: int, kind: str) -> Int[Tensor, "reader"]:
        """Indices of the inputs of `kind` ('q', 'k', 'v', 'mlp') at `layer`, or the logits (layer ignored)."""
        return self._by_kind.get((kind, None if kind == "logits" else layer), torch.zeros(0, dtype=torch.long)).clone()

    @cached_property
    def _by_kind(self) -> dict[tuple[str, int | None], Tensor]:
        out: dict[tuple[str, int | None], list[int]] = {}
        for i, r in enumerate(self.readers):
            out.setdefault((r.kind, r.layer), []).append(i)
        return {k: torch.tensor(v, dtype=torch.long) for k, v in out.items()}

    def attention_readers(self, layer: int) -> Int[Tensor, "reader"]:
        """A layer's q, k and v inputs (consecutive: its query heads, then its KV heads' k and v)."""
        return torch.cat([self.layer_readers(layer, k) for k in "qkv"])

    def n_writers_before(self, reader: Reader) -> int:
        """How many writers (a prefix of `writers`, which are in stage order) feed this input."""
        return bisect.bisect_left(self._writer_stages, _stage_of_reader(reader, self.n_layers))

    @cached_property
    def _writer_stages(self) -> list[int]:
        return [_stage_of_writer(n) for n in self.writers]

    def first_head(self, layer: int) -> int:
        """The writer index of head 0 of `layer` (a layer's heads are consecutive writers)."""
        return 1 + layer * (self.n_heads + int(self.has_mlp))

    def mlp_writer(self, layer: int) -> int:
        return self.first_head(layer) + self.n_heads

    @cached_property
    def feeds(self) -> Bool[Tensor, "writer reader"]:
        """True where input r belongs to node w (a head's q, its KV head's k and v; an MLP's input).
        The logits (not a writer) own the last input."""
        out = torch.zeros(len(self.writers), len(self.readers), dtype=torch.bool)
        for r, reader in enumerate(self.readers):
            if reader.kind == "mlp":
                out[self.mlp_writer(reader.layer), r] = True
            for h in self.heads_fed(reader):
                out[self.first_head(reader.layer) + h, r] = True
        return out

    def summary(self) -> dict:
        return {"nodes": self.n_nodes, "edges": self.n_edges, "inputs": len(self.readers),
                "layers": self.n_layers, "heads": self.n_heads, "kv_heads": self.n_kv}  # fmt: skip


def prune(graph: Graph, keep: Bool[Tensor, "edge"]) -> Bool[Tensor, "edge"]:
    """The edges of `keep` that lie on a path from the embedding to the logits.

    A node stays while it has a kept incoming edge (the embedding always counts as having one) and a
    kept outgoing edge; an edge stays while its writer stays and some node it feeds stays (the logits
    always stay). Repeated until nothing changes, as EAP-IG's `Graph.prune` does."""
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
