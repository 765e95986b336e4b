"""Attention explained: the QK attribution of one head's score between a query and a key position.

The score a head computes (before the mask and the softmax) is

    s(q, k) = scale * rot_q(W_Q[h] x_q + b_Q[h]) . rot_k(W_K[kv] x_k + b_K[kv])     (GQA: kv = h // group)

with x = ln1(r) the normalised residual entering the layer and rot_p the rotary rotation at
position p (the identity without rotary). In the local replacement model (interp.graphs.replacement)
the norm scales, attention patterns and transcoder activations are frozen, so x_p is affine in the
graph's nodes: it is the sum of each source node's contribution plus a constant,

    x_p = sum_i c_i(p) + c_0(p)

where c_i(p) is what node i's output (a token's embedding at r_0, a feature's a_f W_dec[f] or an
error node's error vector at its layer's MLP output) becomes at x_p through the frozen *linear*
model (`LocalReplacement.forward(..., bias=False)`: the residual stream, earlier layers' frozen
attention (OV paths with the real patterns), the transcoders' skip connections, the frozen norms
without their biases), and c_0(p) is everything else: every bias (norms', b_V, b_O, b_dec) and the
writes that are not nodes of the graph (the BOS position's features and errors under zero_bos,
features dropped by max_feature_nodes), carried through the same frozen model. This is the same
linearisation the graph's edges use, so a node's contribution here is the one its edges describe.

With q_i = rot_q(W_Q[h] c_i(q)) and q_0 = rot_q(W_Q[h] c_0(q) + b_Q[h]) (likewise k_j, k_0 with
W_K, b_K at the key position), the score is exactly a sum of pair terms

    s(q, k) = sum_{i in Q + {0}} sum_{j in K + {0}} scale * q_i . k_j

(rotation is linear, so it distributes over the sum). The pseudo-node 0 is called "bias" in the
output. Because the replacement's error nodes make it reproduce the real residual stream, the sum
equals the real model's score (`hook_attn_scores`) up to float rounding; `explain` reports both.

`explain` computes the contributions c_i(p) for every candidate node at once by one batched backward
pass through the frozen model (d_model rows at x_p: the Jacobian's rows), then all pair terms as one
matrix product; `reference_terms` recomputes them one node at a time by forward passes and one pair
at a time in explicit loops (the slow check). ALiBi and soft-capped scores are refused.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from interp import hooks
from interp.errors import WorkbenchError
from interp.graphs.graph import Graph
from interp.graphs.replacement import LocalReplacement


@dataclass
class Head:
    """What a score of one layer's query head reads: its W_Q/b_Q, its KV head's W_K/b_K, the rotary
    tables over the prompt's positions and the score scale."""

    W_Q: Float[Tensor, "d_model d_head"]
    b_Q: Float[Tensor, " d_head"]
    W_K: Float[Tensor, "d_model d_head"]
    b_K: Float[Tensor, " d_head"]
    scale: float
    cos: Float[Tensor, "pos rot"] | None  # None: no rotary
    sin: Float[Tensor, "pos rot"] | None
    halves: bool  # rotary pairs dims i and i + rot/2 (HF); else adjacent pairs 2i, 2i+1 (TL native)

    def rotate(self, x: Float[Tensor, "n d_head"], pos: int) -> Tensor:
        """rot_pos(x) for rows x at position `pos` (linear in x)."""
        if self.cos is None:
            return x
        cos, sin = self.cos[pos], self.sin[pos]
        rd = cos.shape[-1]
        part = x[..., :rd]
        if self.halves:
            a, b = part[..., : rd // 2], part[..., rd // 2 :]
            turned = torch.cat([-b, a], -1)
        else:
            a, b = part[..., 0::2], part[..., 1::2]
            turned = torch.stack([-b, a], -1).flatten(-2)
        out = part * cos + turned * sin
        return torch.cat([out, x[..., rd:]], -1) if rd < x.shape[-1] else out

    def q(self, c: Float[Tensor, "n d_model"], pos: int, bias: bool = False) -> Tensor:
        y = c @ self.W_Q
        return self.rotate(y + self.b_Q if bias else y, pos)

    def k(self, c: Float[Tensor, "n d_model"], pos: int, bias: bool = False) -> Tensor:
        y = c @ self.W_K
        return self.rotate(y + self.b_K if bias else y, pos)


def check_place(model, n_pos: int, layer: int, head: int, query: int, key: int) -> None:
    """One-line errors unless (layer, head, query, key) names a score the model computes."""
    info = model.info
    if not 0 <= layer < info.n_layers:
        raise WorkbenchError(f"layer {layer} does not exist; {info.name} has layers 0..{info.n_layers - 1}")
    if not 0 <= head < info.n_heads:
        raise WorkbenchError(f"head {head} does not exist; {info.name} has query heads 0..{info.n_heads - 1}")
    if not 0 <= query < n_pos:
        raise WorkbenchError(f"query position {query} is outside the prompt's positions 0..{n_pos - 1}")
    if not 0 <= key <= query:
        raise WorkbenchError(
            f"key position {key} must be between 0 and the query position {query} (attention is causal)"
        )


@torch.no_grad()
def head_of(model, layer: int, head: int, n_pos: int, tokens: Tensor | None = None) -> Head:
    """The weights and rotary tables a score of (layer, head) reads (float32)."""
    from interp.circuits.replay import Replay
    from interp.circuits.weights import columns, stacked_qkv

    rep = Replay.of(model)
    if rep.alibi:
        raise WorkbenchError(
            f"{model.info.name} uses ALiBi; its scores carry a position bias QK attribution does not split"
        )
    W, b = stacked_qkv(model.bridge.blocks[layer].attn)
    W, b = W.detach().float(), None if b is None else b.detach().float()
    cols = columns(rep.n_heads, rep.n_kv)
    qc, kc = cols["q"].start + head, cols["k"].start + rep.kv_of(head)
    zero = torch.zeros(W.shape[-1])
    bq, bk = (zero, zero) if b is None else (b[qc], b[kc])
    cos = sin = None
    halves = rep.tables is None
    if rep.rotary:
        if rep.tables is not None:
            cos, sin = (t[:n_pos].detach().float() for t in rep.tables[:2])
        else:
            got = hooks.capture(model, tokens[None], [hooks.name("cos", layer), hooks.name("sin", layer)])
            cos, sin = (got[hooks.name(x, layer)].float().reshape(-1, n_pos, got[hooks.name(x, layer)].shape[-1])[0]
                        for x in ("cos", "sin"))  # fmt: skip
    return Head(W[qc], bq, W[kc], bk, rep.scale, cos, sin, halves)


@torch.no_grad()
def real_score(model, tokens: Tensor, layer: int, head: int, query: int, key: int) -> float:
    """The model's own score at hook_attn_scores (before the softmax)."""
    name = hooks.name("attn_scores", layer)
    got = hooks.capture(model, tokens.reshape(1, -1), [name])
    return float(got[name][0, head, query, key])


# -- the residual at a layer's attention input as a sum of node contributions --------------------------


def graph_errors(g: Graph, R: LocalReplacement) -> Tensor:
    """The error vectors the graph's error nodes hold (zero at BOS under zero_bos, as `attribute` sets)."""
    errors = R.errors.clone()
    if g.settings.get("zero_bos"):
        errors[:, 0] = 0
    return errors


def node_writes(g: Graph, R: LocalReplacement) -> Float[Tensor, "feature d_model"]:
    fl, _, ff = g.features.T
    return R.transcoders.W_dec.float()[fl, ff] * g.activations[:, None]


def attn_input(R: LocalReplacement, embed: Float[Tensor, "batch pos d_model"],
               writes: Float[Tensor, "batch layer pos d_model"], layer: int, bias: bool) -> Tensor:  # fmt: skip
    """x = ln1(r) entering `layer` of the frozen model fed `embed` at r_0 and `writes` at the MLP
    outputs (the loop of `LocalReplacement.forward`, stopped at `layer`'s attention input)."""
    r = embed.float()
    for la in range(layer):
        r, _ = R.block(la, r, writes[:, la], bias)
    return R.weights.ln1[layer].apply(r, R.scales[0, layer], bias)


def constant(g: Graph, R: LocalReplacement, layer: int) -> Float[Tensor, "pos d_model"]:
    """c_0 at every position: what the biases and the writes that are not graph nodes make of x."""
    fl, fp, _ = g.features.T
    mine = torch.zeros_like(R.decoded)
    mine.index_put_((fl, fp), node_writes(g, R), accumulate=True)
    rest = R.decoded + R.errors - mine - graph_errors(g, R)
    return attn_input(R, torch.zeros_like(R.inputs)[None], rest[None], layer, bias=True)[0]


def candidates(g: Graph, layer: int, pos: int) -> Int[Tensor, " n"]:
    """The nodes that can reach x at (layer, pos): tokens and earlier layers' features and errors at
    positions up to pos (attention is causal), in node order."""
    fl, fp, _ = g.features.T
    feats = torch.nonzero((fl < layer) & (fp <= pos))[:, 0]
    errs = torch.tensor([g.error_index(la, p) for la in range(layer) for p in range(pos + 1)], dtype=torch.long)
    toks = torch.arange(g.token_start, g.token_start + pos + 1)
    return torch.cat([feats, errs, toks])


def contributions(g: Graph, R: LocalReplacement, layer: int, pos: int, nodes: Int[Tensor, " n"]
                  ) -> Float[Tensor, "n d_model"]:  # fmt: skip
    """c_i(pos) for the source `nodes` (features, errors, tokens): each node's contribution to x at
    (layer, pos), by one batched backward pass of d_model rows (the Jacobian of x_pos)."""
    P, d = R.n_pos, R.inputs.shape[-1]
    w = R.weights
    eye = torch.zeros(d, P, d)
    eye[:, pos] = torch.eye(d)
    G = w.ln1[layer].transpose(eye, R.scales[0, layer])  # gradient at r_layer, [row P d]
    out = torch.zeros(len(nodes), d)
    fl, fp, _ = g.features.T
    writes = node_writes(g, R)
    errors = graph_errors(g, R)
    is_f = nodes < g.error_start
    is_e = (nodes >= g.error_start) & (nodes < g.token_start)
    is_t = (nodes >= g.token_start) & (nodes < g.logit_start)
    f_nodes, e_nodes = nodes[is_f], nodes[is_e] - g.error_start
    e_layer, e_pos = e_nodes // P, e_nodes % P
    for la in reversed(range(layer)):  # G: the gradient at la's MLP output (= at r_{la+1})
        here = fl[f_nodes] == la
        if here.any():
            idx = torch.nonzero(is_f)[:, 0][here]
            fn = f_nodes[here]
            out[idx] = torch.einsum("rnd,nd->nr", G[:, fp[fn]], writes[fn])
        here = e_layer == la
        if here.any():
            idx = torch.nonzero(is_e)[:, 0][here]
            ep = e_pos[here]
            out[idx] = torch.einsum("rnd,nd->nr", G[:, ep], errors[la, ep])
        S = R.skip(la)
        if S is not None:
            G = G + w.ln2[la].transpose(G @ S, R.scales[1, la])
        G = G + w.ln1[la].transpose(R._attention_transpose(la, G), R.scales[0, la])
    tp = nodes[is_t] - g.token_start
    out[torch.nonzero(is_t)[:, 0]] = torch.einsum("rnd,nd->nr", G[:, tp], R.inputs[tp])
    return out


# -- the score's terms ------------------------------------------------------------------------------------


@dataclass
class QK:
    """One score split into pair terms: terms[i, j] = scale * q_i . k_j for the query-side node
    q_nodes[i] and the key-side node k_nodes[j]; the last row and column are the bias pseudo-node."""

    layer: int
    head: int
    query: int
    key: int
    q_nodes: Int[Tensor, " nq"]  # graph node indices (without the bias)
    k_nodes: Int[Tensor, " nk"]
    terms: Float[Tensor, "nq+1 nk+1"]
    real: float | None = None  # the real model's score (hook_attn_scores)

    @property
    def score(self) -> float:
        return float(self.terms.double().sum())

    def to_dict(self, g: Graph, top: int = 10) -> dict:
        """The score, the real one beside it, the `top` pairs by |term| and the `top` nodes on each
        side by |marginal| (row sums: a query-side node's share; column sums: a key-side node's),
        node ids as graph.json names them ("bias": biases and writes that are not nodes)."""
        qid = [g.describe(int(i))["id"] for i in self.q_nodes] + ["bias"]
        kid = [g.describe(int(i))["id"] for i in self.k_nodes] + ["bias"]
        flat = self.terms.flatten()
        order = flat.abs().argsort(descending=True)[:top].tolist()
        nk = self.terms.shape[1]
        pairs = [{"query_node": qid[i // nk], "key_node": kid[i % nk], "term": float(flat[i])} for i in order]

        def side(m: Tensor, ids: list[str]) -> list[dict]:
            return [{"node": ids[i], "sum": float(m[i])} for i in m.abs().argsort(descending=True)[:top].tolist()]

        return {"layer": self.layer, "head": self.head, "query": self.query, "key": self.key, "score": self.score,
                "real_score": self.real, "n_terms": int(self.terms.numel()), "top_pairs": pairs,
                "query_nodes": side(self.terms.sum(1), qid), "key_nodes": side(self.terms.sum(0), kid)}  # fmt: skip


@torch.no_grad()
def explain(model, R: LocalReplacement, g: Graph, layer: int, head: int, query: int, key: int,
            real: bool = True, head_weights: Head | None = None) -> QK:  # fmt: skip
    """The QK attribution of head `head`'s score at `layer` between positions `query` and `key`
    (see the module docstring); with `real`, the model's own score is read beside it."""
    check_place(model, R.n_pos, layer, head, query, key)
    hd = head_weights or head_of(model, layer, head, R.n_pos, R.tokens)
    c0 = constant(g, R, layer)
    qn, kn = candidates(g, layer, query), candidates(g, layer, key)
    Cq = torch.cat([contributions(g, R, layer, query, qn), c0[query][None]])
    Ck = torch.cat([contributions(g, R, layer, key, kn), c0[key][None]])
    Q = torch.cat([hd.q(Cq[:-1], query), hd.q(Cq[-1:], query, bias=True)])
    K = torch.cat([hd.k(Ck[:-1], key), hd.k(Ck[-1:], key, bias=True)])
    terms = hd.scale * Q @ K.T
    return QK(layer, head, query, key, qn, kn, terms,
              real_score(model, R.tokens, layer, head, query, key) if real else None)  # fmt: skip


@torch.no_grad()
def reference_terms(model, R: LocalReplacement, g: Graph, layer: int, head: int, query: int, key: int
                    ) -> Float[Tensor, "nq+1 nk+1"]:  # fmt: skip
    """The slow check of `explain`'s terms: each node's contribution by its own forward pass of the
    frozen linear model (only that node's output fed in), each pair's term by an explicit loop."""
    check_place(model, R.n_pos, layer, head, query, key)
    hd = head_of(model, layer, head, R.n_pos, R.tokens)
    writes, errors = node_writes(g, R), graph_errors(g, R)
    L, P, d = R.n_layers, R.n_pos, R.inputs.shape[-1]

    def alone(i: int) -> Tensor:  # x at (layer, every pos) from node i only
        embed, w = torch.zeros(1, P, d), torch.zeros(1, L, P, d)
        kind = g.kind(i)
        if kind == "token":
            p = i - g.token_start
            embed[0, p] = R.inputs[p]
        elif kind == "error":
            la, p = divmod(i - g.error_start, P)
            w[0, la, p] = errors[la, p]
        else:
            la, p, _ = (int(x) for x in g.features[i])
            w[0, la, p] = writes[i]
        return attn_input(R, embed, w, layer, bias=False)[0]

    c0 = constant(g, R, layer)
    qn, kn = candidates(g, layer, query).tolist(), candidates(g, layer, key).tolist()
    qs = [hd.q(alone(i)[query][None], query)[0] for i in qn] + [hd.q(c0[query][None], query, bias=True)[0]]
    ks = [hd.k(alone(j)[key][None], key)[0] for j in kn] + [hd.k(c0[key][None], key, bias=True)[0]]
    out = torch.zeros(len(qs), len(ks))
    for a, qa in enumerate(qs):
        for b, kb in enumerate(ks):
            total = 0.0
            for e in range(qa.shape[0]):
                total += float(qa[e]) * float(kb[e])
            out[a, b] = hd.scale * total
    return out


# -- which head and positions an attention-mediated edge runs through ---------------------------------


def node_place(g: Graph, i: int) -> tuple[int, int]:
    """(the layer whose output the node is: -1 for tokens, n_layers for logits, position)."""
    d = g.describe(i)
    layer = -1 if d["kind"] == "token" else d["layer"]
    return layer, d["pos"]


def edge_head(R: LocalReplacement, g: Graph, source: int, target: int) -> tuple[int, int] | None:
    """The (layer, head) an attention-mediated edge mostly runs through, or None when the edge stays
    at one position. Heuristic: among the heads of the layers between the source's and the target's
    (a feature target reads x2 after its own layer's attention; a logit reads after the last layer),
    the one with the largest A[layer, head, target pos, source pos] times the norm of the source's
    write pushed straight through that head's OV (ln1 at the source position, W_V, W_O). An edge may
    also run through several hops; this names one head."""
    ls, k = node_place(g, source)
    lt, q = node_place(g, target)
    if q == k:
        return None
    last = min(lt, R.n_layers - 1)
    if g.kind(source) == "token":
        v = R.inputs[k]
    elif g.kind(source) == "error":
        v = graph_errors(g, R)[ls, k]
    else:
        v = node_writes(g, R)[source]
    best, where = -1.0, None
    for la in range(ls + 1, last + 1):
        x = R.weights.ln1[la].apply(v[None], R.scales[0, la, k : k + 1], bias=False)[0]
        W_V, W_O = R.weights.W_V[la], R.weights.W_O[la]
        group = W_O.shape[0] // W_V.shape[0]
        for h in range(W_O.shape[0]):
            size = float(R.patterns[la, h, q, k]) * float((x @ W_V[h // group] @ W_O[h]).norm())
            if size > best:
                best, where = size, (la, h)
    return where


def edge_qk(model, R: LocalReplacement, g: Graph, edges: Bool[Tensor, "node node"] | None = None, n: int = 10,
            top: int = 10) -> list[dict]:  # fmt: skip
    """The QK attribution of the `n` strongest attention-mediated edges (source and target at
    different positions) among `edges` ([target, source] mask, default every nonzero edge): for each,
    the edge and the explained score of the head `edge_head` names, at (target pos, source pos)."""
    mask = (g.adjacency != 0) if edges is None else edges.clone()
    t, s = torch.nonzero(mask, as_tuple=True)
    w = g.adjacency[t, s]
    out, heads = [], {}
    for a in w.abs().argsort(descending=True).tolist():
        if len(out) >= n:
            break
        src, tgt = int(s[a]), int(t[a])
        place = edge_head(R, g, src, tgt)
        if place is None:
            continue
        la, h = place
        q, k = node_place(g, tgt)[1], node_place(g, src)[1]
        if (la, h) not in heads:
            heads[(la, h)] = head_of(model, la, h, R.n_pos, R.tokens)
        qk = explain(model, R, g, la, h, q, k, head_weights=heads[(la, h)])
        out.append({"edge": {"source": g.describe(src)["id"], "target": g.describe(tgt)["id"],
                             "weight": float(w[a])}, **qk.to_dict(g, top)})  # fmt: skip
    return out
