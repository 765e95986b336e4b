"""The attribution graph of one prompt: direct effects through the frozen replacement model.

Edge (source -> target) = the source's output vector contracted with the gradient of the target's
input at the place the source writes, the gradient taken through the frozen linear model
(interp.graphs.replacement: residual stream, attention's frozen OV paths, frozen norms, the
transcoders' skip connections; never through another feature). A feature writes a_f W_dec[f] at its
layer's MLP output, an error node its error vector there, a token node its embedding at r_0. A
feature target reads its encoder pre-activation x2 . W_enc[:, f]; a logit target reads the logit
minus the mean logit over the vocabulary (circuit-tracer's demeaned unembedding column).

`attribute` computes the rows with `LocalReplacement.transposed` (the transpose of
`LocalReplacement.backward` with the norms folded into the weights): one vector-Jacobian product per
target row, up to `batch_size` rows per pass, each row entering the pass at its own layer and, the
patterns being causal, a pass stopping at its last target's position. Every target's value is its row sum plus a constant (what the
biases and the writes that are not nodes add), which `check_rows` verifies; interp.graphs.reference
rebuilds the adjacency one source at a time by perturbing the real model.
"""

from __future__ import annotations

import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp.errors import WorkbenchError
from interp.graphs.graph import Graph
from interp.graphs.replacement import LocalReplacement, build


@torch.no_grad()
def salient_logits(logits: Float[Tensor, " vocab"], max_n_logits: int = 10, desired_logit_prob: float = 0.95
                   ) -> tuple[Int[Tensor, " k"], Float[Tensor, " k"]]:  # fmt: skip
    """The most likely tokens, fewest first whose probabilities sum to `desired_logit_prob`, at most
    `max_n_logits` (circuit-tracer's choice): (ids, probabilities)."""
    if max_n_logits < 1 or not 0 < desired_logit_prob <= 1:
        raise WorkbenchError(
            f"need max_n_logits >= 1 and 0 < desired_logit_prob <= 1, got {max_n_logits}, {desired_logit_prob}"
        )
    probs = logits.float().softmax(-1)
    top_p, top_i = probs.topk(min(max_n_logits, probs.shape[-1]))
    keep = int(torch.searchsorted(top_p.cumsum(0), torch.tensor(desired_logit_prob))) + 1
    return top_i[:keep], top_p[:keep]


def demeaned_unembed(R: LocalReplacement, ids: Int[Tensor, " k"]) -> Float[Tensor, "k d_model"]:
    """W_U's columns of `ids` minus the mean column: the gradient of a centred logit at x_final."""
    W_U = R.weights.W_U
    return (W_U[:, ids] - W_U.mean(1, keepdim=True)).T


def bos_position(tokens: Tensor, bos_token_id: int | None) -> bool:
    return bos_token_id is not None and int(tokens[0]) == int(bos_token_id)


def feature_nodes(R: LocalReplacement, zero_bos: bool) -> tuple[Int[Tensor, "n 3"], Float[Tensor, " n"]]:
    """(layer, pos, feature) of every active latent, sorted, and their activations; with `zero_bos`
    the first position's are left out (circuit-tracer's default for a BOS token)."""
    acts = R.acts.clone()
    if zero_bos:
        acts[:, 0] = 0
    idx = acts.nonzero()  # row-major: sorted by layer, pos, feature
    return idx, acts[idx[:, 0], idx[:, 1], idx[:, 2]]


@torch.no_grad()
def attribute(model, transcoders, prompt: str | Tensor, max_n_logits: int = 10, desired_logit_prob: float = 0.95,
              batch_size: int = 256, zero_bos: bool = True, max_feature_nodes: int | None = None,
              replacement: LocalReplacement | None = None, progress=None) -> Graph:  # fmt: skip
    """The attribution graph of `prompt` (text, or token ids with BOS as the model reads them).
    `progress(done, total, message)` is told of each batch of rows."""
    tokens = model.to_tokens(prompt)[0] if isinstance(prompt, str) else prompt.reshape(-1)
    if tokens.numel() > model.info.n_ctx:
        raise WorkbenchError(
            f"the prompt is {tokens.numel()} tokens but {model.info.name} reads at most {model.info.n_ctx}; shorten it"
        )
    R = replacement or build(model, transcoders, tokens)
    zero_bos = zero_bos and bos_position(R.tokens, model.bos_token_id)
    feats, acts = feature_nodes(R, zero_bos)
    ids, probs = salient_logits(R.logits[-1], max_n_logits, desired_logit_prob)
    text = prompt if isinstance(prompt, str) else model.tokenizer.decode(tokens.tolist())
    g = Graph(text, R.tokens.tolist(), [model.tokenizer.decode([t]) for t in R.tokens.tolist()], R.n_layers, feats, acts,
              ids.cpu(), probs.cpu(), [model.tokenizer.decode([int(t)]) for t in ids], torch.zeros(0, 0),
              torch.zeros(0), torch.zeros(0),
              {"name": model.info.name, "n_layers": model.info.n_layers, "d_model": model.info.d_model},
              {"max_n_logits": max_n_logits, "desired_logit_prob": desired_logit_prob, "zero_bos": zero_bos,
               "d_sae": R.transcoders.cfg.d_sae, "skip": R.transcoders.cfg.skip})  # fmt: skip
    errors = R.errors.clone()
    if zero_bos:
        errors[:, 0] = 0
    fill(g, R, errors, batch_size, max_feature_nodes, progress=progress)
    return g


def fill(g: Graph, R: LocalReplacement, errors: Float[Tensor, "layer pos d_model"], batch_size: int,
         max_feature_nodes: int | None = None, update_interval: int = 4, progress=None) -> None:  # fmt: skip
    """Compute g's adjacency, values and constants from the replacement model. With
    `max_feature_nodes`, only that many features get rows, chosen as circuit-tracer chooses them (the
    logit rows first, then in rounds the unvisited features of the largest influence on the logits
    through the rows computed so far); the others are dropped from the graph and what they write is
    counted in the targets' constants."""
    n_f, N = g.n_features, g.n_nodes
    cap = n_f if max_feature_nodes is None else max(0, min(max_feature_nodes, n_f))
    rows_of: list[Tensor] = []  # node index of each computed row
    blocks: list[Tensor] = []
    sums: list[Tensor] = []  # each row's sum of |edges|
    todo = cap + g.n_logits
    fl, _, ff = g.features.T
    reads = _reads(g, R, errors, R.transcoders.W_dec[fl, ff].float() * g.activations[:, None])  # a_f W_dec[f]

    def run(batch: Tensor) -> None:  # batches of nearby target positions (a batch stops at its last one)
        batch = batch[torch.argsort(_targets(g, R, batch)[1], stable=True)]
        for start in range(0, len(batch), batch_size):
            rows, block = _rows(g, R, batch[start : start + batch_size], reads)
            rows_of.append(rows)
            blocks.append(block)
            sums.append(torch.linalg.vector_norm(block, 1, dim=1))
            if progress:
                progress(sum(len(r) for r in rows_of), todo, "attribution rows")

    run(torch.arange(g.logit_start, N))
    visited = torch.zeros(n_f, dtype=torch.bool)
    while int(visited.sum()) < cap:
        if cap == n_f:
            pending = torch.arange(n_f)
        else:
            infl = partial_influence(blocks, torch.cat(rows_of), g, torch.cat(sums))
            rank = infl[:n_f].argsort(descending=True)
            pending = rank[~visited[rank]][: min(update_interval * batch_size, cap - int(visited.sum()))]
        run(pending)
        visited[pending] = True
    g.values, g.constants = target_values(g, R, errors)
    if cap == n_f:
        g.adjacency = torch.zeros(N, N)
        for rows, block in zip(rows_of, blocks):
            g.adjacency[rows] = block
        return
    keep, drop = torch.nonzero(visited)[:, 0], torch.nonzero(~visited)[:, 0]
    nodes = torch.cat([keep, torch.arange(n_f, N)])
    new = torch.full((N,), -1, dtype=torch.long)
    new[nodes] = torch.arange(len(nodes))
    g.adjacency = torch.zeros(len(nodes), len(nodes))
    for rows, block in zip(rows_of, blocks):
        g.constants[rows] += block[:, drop].sum(1)  # what the dropped features write, as constants
        g.adjacency[new[rows]] = block[:, nodes]
    g.values, g.constants = g.values[nodes], g.constants[nodes]
    g.features, g.activations = g.features[keep], g.activations[keep]
    g.settings.update(max_feature_nodes=max_feature_nodes, active_features=n_f)


def partial_influence(blocks: list[Float[Tensor, "row node"]], row_nodes: Int[Tensor, " row"], g: Graph,
                      sums: Float[Tensor, " row"] | None = None, max_iter: int = 1000, chunk: int = 256
                      ) -> Float[Tensor, " node"]:  # fmt: skip
    """Influence on the logits through the rows computed so far (circuit-tracer's partial influence:
    rows not yet computed count as nodes without inputs). `blocks`: the rows, in the order of
    `row_nodes`; `sums`: each row's sum of |edges|, if known. With A the rows' |edges| normalised to sum 1 and x_0 the logit probabilities on the
    rows, x_{t+1} = x_t A[:, row_nodes] is the influence reaching the rows in t + 1 steps and the
    influence on every node is (sum_t x_t) A: the walk reads only A's square part, the whole of A once."""
    if sums is None:
        sums = torch.cat([torch.linalg.vector_norm(b, 1, dim=1) for b in blocks])
    sums = sums.clamp(min=1e-10)
    square = torch.cat([b[:, row_nodes].abs() for b in blocks]).div_(sums[:, None])
    x = torch.zeros(len(row_nodes))
    is_logit = row_nodes >= g.logit_start
    x[is_logit] = g.logit_probs[row_nodes[is_logit] - g.logit_start].float()
    reached = torch.zeros_like(x)
    for _ in range(max_iter):
        if not x.any():
            break
        reached += x
        x = x @ square
    else:
        raise WorkbenchError("partial influence did not converge; the adjacency is not acyclic")
    total, weights, start = torch.zeros(g.n_nodes), reached / sums, 0
    for b in blocks:
        for i in range(0, len(b), chunk):  # |rows| `chunk` rows at a time
            part = b[i : i + chunk]
            total += weights[start + i : start + i + len(part)] @ part.abs()
        start += len(b)
    return total


def _targets(g: Graph, R: LocalReplacement, batch: Int[Tensor, " row"]) -> tuple[Tensor, Tensor]:
    """(layer, position) of each target node in `batch`; a logit's layer is n_layers, its position the last."""
    is_feat = batch < g.n_features
    f = g.features[batch.clamp(max=max(g.n_features - 1, 0))] if g.n_features else torch.zeros(len(batch), 3).long()
    return torch.where(is_feat, f[:, 0], R.n_layers), torch.where(is_feat, f[:, 1], R.n_pos - 1)


def _reads(g: Graph, R: LocalReplacement, errors: Tensor, writes: Float[Tensor, "feature d_model"]) -> list[tuple]:
    """Per layer, what the gradient at its MLP output is contracted with, as one batched product over
    positions: (first feature node, positions [n], slots [n], M [pos, d_model, slot + 1]) with
    M[p, :, s] the write of the s-th feature node at position p and the last column the error node's
    (errors[layer, p]). A layer's feature nodes are a contiguous run sorted by position."""
    out = []
    for layer in range(R.n_layers):
        nodes = torch.nonzero(g.features[:, 0] == layer)[:, 0]
        pos = g.features[nodes, 1]
        counts = torch.bincount(pos, minlength=R.n_pos)
        width = int(counts.max())
        slot = torch.arange(len(nodes)) - torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
        M = torch.zeros(R.n_pos, width + 1, errors.shape[-1])
        M[pos, slot] = writes[nodes]
        M[:, width] = errors[layer]
        out.append((int(nodes[0]) if len(nodes) else 0, pos, slot, M.transpose(1, 2).contiguous()))
    return out


def _read(block: Tensor, G: Float[Tensor, "pos row d_model"], read: tuple, e0: int) -> None:
    """Write the rows' edges from one layer's feature and error nodes (`_reads`) into `block`."""
    p, n, _ = G.shape
    if n == 0:
        return
    a, pos, slot, M = read
    out = torch.bmm(G, M[:p])  # [pos row slot+1]
    c = int(torch.searchsorted(pos, p))  # the nodes at positions < p
    block[:n, a : a + c] = out[pos[:c], :, slot[:c]].T
    block[:n, e0 : e0 + p] = out[:, :, -1].T


def _rows(g: Graph, R: LocalReplacement, batch: Int[Tensor, " row"], reads: list[tuple]
          ) -> tuple[Int[Tensor, " row"], Float[Tensor, "row node"]]:  # fmt: skip
    """(the target nodes `batch` (features and logits) reordered, their adjacency rows) by one
    backward pass through `R.transposed`. Rows enter the pass at their own layer (sorted by layer, the
    live rows are a prefix) and, with causal patterns, positions after the batch's last target are
    left out (their gradients are zero)."""
    T, P, L, d = R.transposed, R.n_pos, R.n_layers, R.inputs.shape[-1]
    layer, pos = _targets(g, R, batch)
    order = torch.argsort(layer, descending=True, stable=True)
    batch, layer, pos = batch[order], layer[order], pos[order]
    B, p = len(batch), int(pos.max()) + 1 if T.causal else P
    H, e = T.W_O[0].shape[0], T.W_O[0].shape[2]
    bufs, gz, gv = [torch.empty(p * B * d) for _ in range(3)], torch.empty(H * p * B * e), torch.empty(H * p * B * e)
    A, block = T.truncated(p), torch.zeros(B, g.n_nodes)
    n = int((layer == L).sum())
    G = bufs[0][: p * n * d].view(p, n, d).zero_()
    if n:
        u = demeaned_unembed(R, g.logit_tokens[batch[:n] - g.logit_start])
        G[P - 1] = R.weights.ln_final.transpose(u, R.final_scale[P - 1].expand(n))
    for la in reversed(range(L)):
        _read(block, G, reads[la], g.error_index(la, 0))
        T.skip_(la, G, bufs[2])
        T.attention_(la, G, A[la], gz, gv)
        m = int((layer >= la).sum())
        if m > n:  # this layer's feature rows enter: their gradient at x2 is W_enc[:, f] at their position
            f = g.features[batch[n:m], 2]
            v = R.weights.ln2[la].transpose(R.transcoders.W_enc[la][:, f].T.float(), R.scales[1, la][pos[n:m]])
            new = bufs[1 if G.data_ptr() == bufs[0].data_ptr() else 0][: p * m * d].view(p, m, d)
            new[:, :n] = G
            new[:, n:] = T.entering(la, v, pos[n:m], A[la]).transpose(0, 1)
            G, n = new, m
    if n:
        block[:n, g.token_start : g.token_start + p] = torch.bmm(G, R.inputs[:p, :, None])[..., 0].T
    return batch, block


def target_values(g: Graph, R: LocalReplacement, errors: Tensor) -> tuple[Tensor, Tensor]:
    """(each target's value in the real run, the constant part of it: every bias and every write that
    is not a node, through the frozen model), zeros outside the target rows."""
    fl, fp, ff = g.features.T
    values, constants = torch.zeros(g.n_nodes), torch.zeros(g.n_nodes)
    values[: g.n_features] = R.pre[fl, fp, ff]
    centred = R.logits[-1] - R.logits[-1].mean()
    values[g.logit_start :] = centred[g.logit_tokens]
    node_writes = torch.zeros_like(R.decoded)  # what the feature and error nodes write
    node_writes.index_put_((fl, fp), R.transcoders.W_dec.float()[fl, ff] * g.activations[:, None], accumulate=True)
    rest = R.decoded + R.errors - node_writes - errors  # BOS's writes (zero_bos) and anything else not a node
    x2, xf = R.forward(torch.zeros_like(R.inputs)[None], rest[None], bias=True)
    pre = R.transcoders.pre_acts(x2[0].to(R.transcoders.W_enc.dtype)).float()
    constants[: g.n_features] = pre[fl, fp, ff]
    lg = R.unembed(xf[0, -1])
    constants[g.logit_start :] = (lg - lg.mean())[g.logit_tokens]
    return values, constants


def check_rows(g: Graph, atol: float = 1e-4, rtol: float = 1e-4) -> float:
    """The largest |row sum + constant - value| over the target rows, relative to the value's scale;
    raises when it exceeds the tolerance (a linear model's rows must add up)."""
    rows = g.target_rows()
    got = g.adjacency[rows].sum(1) + g.constants[rows]
    want = g.values[rows]
    err = (got - want).abs()
    bad = err > atol + rtol * want.abs()
    if bad.any():
        i = int(rows[bad.nonzero()[0, 0]])
        raise AssertionError(
            f"row {i} ({g.describe(i)['id']}) sums to {float(got[bad][0]):.6g}, its value is {float(want[bad][0]):.6g}"
        )
    return float(err.max()) if len(err) else 0.0
