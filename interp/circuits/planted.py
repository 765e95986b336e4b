"""Planted circuits: a small model whose weights are set by hand so that a known set of edges does
the task (MIB's InterpBench track: the ground truth depends on no attribution method).

`build_planted(spec)` makes a two-layer, attention-only, four-head in-house model (a TransformerBridge
in our `Model`, learned positions, no normalization, a word-level vocabulary with BOS = 0) that does
induction. Its residual stream is split into one-hot blocks of `n_vocab` or `n_ctx` dimensions:

    TOK   the current token (the token embedding)       POS   the position (the positional embedding)
    PREV  the previous token (written by a0.h0)         OUT   what the unembedding reads (logit t = OUT[t])
    JUNK  read by nothing (where the decoys write)

The circuit (every score below is `sharpness` where it matches and 0 elsewhere):
    a0.h0  previous-token head: query POS[i], key POS[j], matches at j = i - 1; value TOK -> PREV
    a1.h0  induction head: query TOK, key PREV (K-composition with a0.h0), matches where the previous
           token is the current one; value TOK -> OUT x `copy`: the token after the earlier copy
The other heads are not in it:
    a0.h1  current-token head writing TOK x `noise` into PREV (it blurs the induction head's keys a little)
    a0.h2  uniform attention, TOK -> JUNK          a0.h3  a previous-token decoy, TOK -> JUNK
    a1.h1  uniform attention, TOK -> OUT x `noise` (a weak direct push towards tokens seen before)
    a1.h2  an induction decoy (reads a0.h0's PREV), TOK -> JUNK
    a1.h3  attends to BOS, TOK -> OUT x `noise` (the same on every prompt)

A second shape, `spec.mlp` (presets "successor-*"): the same heads with an MLP in each layer (ReLU,
`n_vocab` neurons); the induction head writes into a block COPY instead of OUT, and the layer-1 MLP maps
COPY[t] to OUT[successor(t)] (neuron t fires when COPY[t] > copy / 8), so the model predicts the successor
(t + 1) of the token it copies, and the circuit ends a1.h0 -> m1 -> logits. The layer-0 MLP is not in it:
it pushes the current token's logit by `noise` (m0 -> logits, nearly never the answer).

A third shape, `spec.n_kv = 2` (presets "gqa-*"): grouped-query attention, query heads h0 and h1 reading
KV head kv0, h2 and h3 kv1 (the grouping h // 2 every GQA implementation uses). Layer 0's KV heads both
key on POS one dim up (value TOK): a0.h0 is the previous-token head, a0.h1 the current-token head (its
query shifted one dim up as well), a0.h2 uniform, a0.h3 the previous-token decoy, as above. Layer 1's
kv0 keys on PREV: a1.h0 is the induction head and a1.h1 a decoy sharing its keys and values (query TOK:
it attends exactly where the induction head does) that writes into JUNK; kv1 keys on POS[0]: a1.h2
uniform (TOK -> OUT x `noise`), a1.h3 the BOS sink. The circuit has the same edge names on both graphs
(query head 0 reads kv0 in both) but not the same edges: on our grouped graph a0.h0 -> a1.kv0<k> and
embed -> a1.kv0<v> feed the decoy too, and embed -> a0.kv0<v> the current-token head too; on MIB's
ungrouped graph (`interp.circuits.ungroup.ungrouped(model)`, kv h = query head h's own) they feed the
circuit's heads alone, and the decoy's inputs are edges of their own (a1.kv1<k>, ...), outside the
circuit. `both_graphs(model, task)` gives the model and ground truth on each graph.

`ground_truth(model, task)` names the circuit's edges in our graph's vocabulary (interp.circuits.graph)
and which of them the task's counterfactual leaves silent: a0.h0's query and key read only positions,
the same in clean and corrupted prompts, so no patching method can see those edges (nor, under the
built-in induction task, whose corrupted prompts keep END's token, the induction head's query). Silent
edges are in the mechanism but count neither as planted nor as not (interp.circuits.recovery drops
them). `planted_task` is induction with everything resampled (BOS + B + B[:-1]), so that every edge of
the circuit but the positional ones is visible; the built-in `induction` task runs on the model too.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from jaxtyping import Bool
from torch import Tensor

from interp.circuits.graph import Graph
from interp.circuits.ungroup import ungrouped
from interp.data.task import Task, TaskSplit
from interp.errors import WorkbenchError
from interp.io import write_dir
from interp.models.cache import cache_dir
from interp.models.inhouse import NativeSpec, build_native

if TYPE_CHECKING:
    from interp.models import Model

BOS = "<bos>"
N_HEADS = 4  # the roles above, per layer
N_KV_GQA = 2  # KV heads a layer of the grouped-query shape
TASK_NAME = "planted-induction"
SUCCESSOR_TASK = "planted-successor"  # the same prompts, answered by the successor of the copied token

# the mechanism: every edge the induction circuit uses, and the ones no token counterfactual can change
CIRCUIT = ("embed->a0.h0<q>", "embed->a0.kv0<k>", "embed->a0.kv0<v>", "a0.h0->a1.kv0<k>",
           "embed->a1.h0<q>", "embed->a1.kv0<v>", "a1.h0->logits")  # fmt: skip
POSITIONAL = ("embed->a0.h0<q>", "embed->a0.kv0<k>")  # a0.h0's pattern reads positions only
SAME_END = ("embed->a1.h0<q>",)  # the built-in induction task keeps END's token, which a1.h0's query reads
CIRCUIT_MLP = (*CIRCUIT[:-1], "a1.h0->m1", "m1->logits")  # the successor model: the copy goes through m1


@dataclass(frozen=True)
class PlantedSpec:
    n_vocab: int = 48  # token ids, BOS = 0 among them
    n_ctx: int = 32  # positions
    sharpness: float = 8.0  # attention score where a head's query and key match (0 elsewhere)
    copy: float = 4.0  # logit the induction head writes for the token it copies
    noise: float = 0.25  # weight of the writes of heads outside the circuit into blocks the circuit reads
    mlp: bool = False  # the successor model: MLPs, the layer-1 one mapping the copied token to its successor
    n_kv: int = N_HEADS  # KV heads a layer: 4 (every head its own) or 2 (grouped-query attention, pairs of heads)

    def check(self) -> None:
        if self.n_vocab < 8:
            raise WorkbenchError(f"a planted model needs at least 8 token ids (got n_vocab={self.n_vocab})")
        if self.n_ctx < 4:
            raise WorkbenchError(f"a planted model needs a context of at least 4 positions (got n_ctx={self.n_ctx})")
        if self.sharpness <= 0 or self.copy <= 0 or self.noise < 0:
            raise WorkbenchError("sharpness and copy must be positive and noise at least 0")
        if self.n_kv not in (N_HEADS, N_KV_GQA):
            raise WorkbenchError(f"a planted model has {N_HEADS} or {N_KV_GQA} KV heads a layer (got n_kv={self.n_kv})")

    def kv_of(self, head: int) -> int:
        """The KV head query head `head` reads."""
        return head // (N_HEADS // self.n_kv)

    @property
    def d_head(self) -> int:
        return max(self.n_vocab, self.n_ctx)

    @property
    def blocks(self) -> dict[str, int]:
        """Where each one-hot block of the residual stream starts."""
        V, P = self.n_vocab, self.n_ctx
        return {"TOK": 0, "PREV": V, "OUT": 2 * V, "POS": 3 * V, "JUNK": 3 * V + P, "COPY": 4 * V + P}

    @property
    def d_model(self) -> int:
        return (5 if self.mlp else 4) * self.n_vocab + self.n_ctx

    def native(self) -> NativeSpec:
        return NativeSpec(n_layers=2, d_model=self.d_model, n_heads=N_HEADS, d_head=self.d_head, n_ctx=self.n_ctx,
                          d_vocab=self.n_vocab, attn_only=not self.mlp, d_mlp=self.n_vocab, act_fn="relu",
                          normalization=None, positional="standard", n_kv_heads=None if self.n_kv == N_HEADS else self.n_kv)  # fmt: skip


def successor(tokens: Tensor, n_vocab: int) -> Tensor:
    """t + 1, wrapping past the last id to 1 (never BOS)."""
    return tokens % (n_vocab - 1) + 1


SHARP = PlantedSpec()
SOFT = PlantedSpec(sharpness=3.0)  # the circuit heads' attention far from saturated (about 0.6 on the match)
SATURATED = PlantedSpec(sharpness=16.0)  # attention all but one-hot: gradients through the softmax vanish
PRESETS = {"sharp": SHARP, "soft": SOFT, "saturated": SATURATED,
           "successor-sharp": PlantedSpec(mlp=True), "successor-soft": PlantedSpec(sharpness=3.0, mlp=True),
           "gqa-sharp": PlantedSpec(n_kv=N_KV_GQA), "gqa-soft": PlantedSpec(sharpness=3.0, n_kv=N_KV_GQA),
           "gqa-saturated": PlantedSpec(sharpness=16.0, n_kv=N_KV_GQA)}  # fmt: skip


# -- the tokenizer -------------------------------------------------------------------------------------


def planted_tokenizer(n_vocab: int):
    """A word-level tokenizer of `n_vocab` ids: BOS ('<bos>') = 0, then 't1', 't2', ... (cached on disk:
    TransformerLens reopens tokenizers from their folder)."""
    from transformers import AutoTokenizer

    target = cache_dir() / "tokenizers" / f"planted-{n_vocab}"

    def fill(tmp: Path) -> None:
        from tokenizers import Tokenizer, models, pre_tokenizers
        from transformers import PreTrainedTokenizerFast

        vocab = {BOS: 0, **{f"t{i}": i for i in range(1, n_vocab)}}
        tok = Tokenizer(models.WordLevel(vocab, unk_token=BOS))
        tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
        fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=BOS, unk_token=BOS, pad_token=BOS)
        fast.save_pretrained(tmp)

    if not (target / "tokenizer.json").is_file():
        write_dir(target, fill)
    return AutoTokenizer.from_pretrained(str(target))


# -- the weights ---------------------------------------------------------------------------------------


@torch.no_grad()
def build_planted(spec: PlantedSpec = SHARP, name: str | None = None) -> Model:
    """The hand-set induction (or successor) model of `spec` (see the module docstring), on the CPU in float32."""
    from interp.bridge import native_attention_scale, native_head_bias, native_parameters

    spec.check()
    name = name or (SUCCESSOR_TASK if spec.mlp else TASK_NAME)
    model = build_native(spec.native(), planted_tokenizer(spec.n_vocab), name=name)
    params = native_parameters(model.bridge)
    for p in params.values():
        p.zero_()
    bias = native_head_bias(model.bridge)
    if bias is not None:
        bias.zero_()
    b, V, P = spec.blocks, spec.n_vocab, spec.n_ctx
    tok, pos = torch.arange(V), torch.arange(P)
    params["tok_embed.weight"][tok, b["TOK"] + tok] = 1.0
    params["pos.weight"][pos, b["POS"] + pos] = 1.0
    params["head.weight"][tok, b["OUT"] + tok] = 1.0
    _plant_attention(params, spec, spec.sharpness / native_attention_scale(model.bridge))
    if spec.mlp:
        _plant_mlps(params, spec)
    return model


def _plant_attention(params: dict, spec: PlantedSpec, s: float) -> None:
    """Both layers' heads (module docstring); `s` is the key's weight, so that a match scores `sharpness`."""
    b, V, P, dh = spec.blocks, spec.n_vocab, spec.n_ctx, spec.d_head
    tok = torch.arange(V)

    def keys(layer: int, g: int, key: str | None, src: str, shift: int = 0, weight: float = 1.0):
        """KV head g: its key dim d reads block `key`'s entry d - `shift` (x s x `weight`); its value
        dims copy block `src` one-hot."""
        n = P if key == "POS" else V
        if key is not None:
            keep = torch.arange(min(n, dh) - shift)
            params[f"layers.{layer}.attn.k.weight"][g * dh + keep + shift, b[key] + keep] = s * weight
        params[f"layers.{layer}.attn.v.weight"][g * dh + tok, b[src] + tok] = 1.0

    def query(layer: int, h: int, block: str | None, dst: str, weight: float, shift: int = 0):
        """Query head h: its query dim d reads block `block`'s entry d - `shift` (none: uniform attention);
        its output writes its value dims into block `dst` x `weight`."""
        if block is not None:
            n = P if block == "POS" else V
            keep = torch.arange(min(n, dh) - shift)
            params[f"layers.{layer}.attn.q.weight"][h * dh + keep + shift, b[block] + keep] = 1.0
        params[f"layers.{layer}.attn.o.weight"][b[dst] + tok, h * dh + tok] = weight

    # a query at dim i matches a key at dim i: the previous-token heads' keys sit one dim up
    ind_dst, ind_w = ("COPY" if spec.mlp else "OUT"), spec.copy
    if spec.n_kv == N_HEADS:  # every head its own keys and values
        for g, key, shift in ((0, "POS", 1), (1, "POS", 0), (2, None, 0), (3, "POS", 1)):
            keys(0, g, key, "TOK", shift)
        for g, key in ((0, "PREV"), (1, None), (2, "PREV"), (3, None)):
            keys(1, g, key, "TOK")
        cur, bos_head = 0, 3  # the current-token head's query needs no shift; a1.h3 is the BOS sink
        roles1 = (
            (0, "TOK", ind_dst, ind_w),
            (1, None, "OUT", spec.noise),
            (2, "TOK", "JUNK", 1.0),
            (3, None, "OUT", spec.noise),
        )
    else:  # 2 KV heads a layer: h0 and h1 share kv0, h2 and h3 kv1 (module docstring)
        keys(0, 0, "POS", "TOK", 1)
        keys(0, 1, "POS", "TOK", 1)
        keys(1, 0, "PREV", "TOK")
        keys(1, 1, None, "TOK")
        cur, bos_head = 1, 3  # the current-token head meets the shifted keys with a query shifted as much
        roles1 = (
            (0, "TOK", ind_dst, ind_w),
            (1, "TOK", "JUNK", 1.0),
            (2, None, "OUT", spec.noise),
            (3, None, "OUT", spec.noise),
        )
    query(0, 0, "POS", "PREV", 1.0)  # previous-token head
    query(0, 1, "POS", "PREV", spec.noise, shift=cur)  # current-token head (noise into the induction keys)
    query(0, 2, None, "JUNK", 1.0)  # uniform
    query(0, 3, "POS", "JUNK", 1.0)  # previous-token decoy
    for h, block, dst, weight in roles1:
        query(1, h, block, dst, weight)
    # the BOS sink: a constant query meets POS[0] in its KV head's keys
    params["layers.1.attn.q.bias"][bos_head * dh] = 1.0
    params["layers.1.attn.k.weight"][spec.kv_of(bos_head) * dh, b["POS"]] = 2 * s


def _plant_mlps(params: dict, spec: PlantedSpec) -> None:
    """The successor model's MLPs: m0 a decoy echoing the current token, m1 the copied token's successor."""
    b, V = spec.blocks, spec.n_vocab
    tok = neuron = torch.arange(V)
    params["layers.0.mlp.fc_in.weight"][neuron, b["TOK"] + tok] = 1.0  # fires for the current token
    params["layers.0.mlp.fc_out.weight"][b["OUT"] + tok, neuron] = spec.noise
    params["layers.1.mlp.fc_in.weight"][neuron, b["COPY"] + tok] = 1.0  # fires for the copied token
    params["layers.1.mlp.fc_in.bias"][:] = -spec.copy / 8
    params["layers.1.mlp.fc_out.weight"][b["OUT"] + successor(tok, V), neuron] = 2.0


# -- the task and the ground truth ---------------------------------------------------------------------


def _planted(model: Model, n: int, seg_len: int, seed: int) -> Task:
    from interp.data.synthetic import bos_id, token_pool

    if 2 * seg_len > model.info.n_ctx:
        raise WorkbenchError(f"an induction segment of {seg_len} tokens does not fit {model.info.name}'s context "
                             f"of {model.info.n_ctx}; choose seg_len <= {model.info.n_ctx // 2}")  # fmt: skip
    pool = token_pool(model)
    if seg_len > len(pool):
        raise WorkbenchError(f"a segment of {seg_len} distinct tokens needs a pool of as many; "
                             f"{model.info.name}'s has {len(pool)}: choose seg_len <= {len(pool)}")  # fmt: skip
    g = torch.Generator().manual_seed(seed)
    draw = lambda: pool[torch.stack([torch.randperm(len(pool), generator=g)[:seg_len] for _ in range(n)])]
    a, b = draw(), draw()
    bos = torch.full((n, 1), bos_id(model), dtype=torch.long)
    clean, corrupted = torch.cat([bos, a, a[:, :-1]], 1), torch.cat([bos, b, b[:, :-1]], 1)
    end = torch.full((n,), clean.shape[1] - 1)
    name, answers = TASK_NAME, a[:, -1].clone()
    if not model.info.attn_only:
        name, answers = SUCCESSOR_TASK, successor(answers, model.info.d_vocab)
    return Task(name, clean.to(model.device), corrupted.to(model.device), end, answers, None, "logit",
                {"END": end}, min_layers=2, source={"seg_len": seg_len, "seed": seed, "corrupted": "all resampled"})  # fmt: skip


def planted_task(model: Model, n_prompts: int, n_heldout: int, seed: int = 0, seg_len: int = 10) -> TaskSplit:
    """Induction whose corrupted prompts are another repeated segment altogether (BOS + B + B[:-1]):
    every token differs, so every non-positional edge of the circuit carries a difference. On the
    successor model (with MLPs) the answer is the successor of the token induction copies."""
    return TaskSplit(_planted(model, n_prompts, seg_len, seed), _planted(model, n_heldout, seg_len, seed + 1))


@dataclass(frozen=True)
class GroundTruth:
    """The planted circuit on one graph, as seen by one task."""

    graph: Graph
    circuit: tuple[str, ...]  # every edge of the mechanism (names as Graph.edge_names gives them)
    silent: tuple[str, ...]  # mechanism edges the task's counterfactual cannot change

    @property
    def planted(self) -> tuple[str, ...]:
        """The edges a method should find: the circuit less its silent edges."""
        return tuple(e for e in self.circuit if e not in self.silent)

    def labels(self) -> tuple[Bool[Tensor, " edge"], Bool[Tensor, " edge"]]:
        """(positive, counted) per edge: planted edges are positive; silent ones are not counted."""
        names = self.graph.edge_names()
        positive = torch.tensor([n in self.planted for n in names])
        counted = torch.tensor([n not in self.silent for n in names])
        return positive, counted


def ground_truth(model: Model, task: Task) -> GroundTruth:
    """The planted circuit of `build_planted`'s model in its graph, with what `task` leaves silent
    (`planted_task`'s and the built-in induction task's counterfactuals are known; others are refused)."""
    graph = Graph.of(model)
    if (
        graph.n_layers != 2
        or graph.n_heads != N_HEADS
        or graph.n_kv not in (N_HEADS, N_KV_GQA)
        or model.info.positional != "standard"
    ):
        raise WorkbenchError(f"{model.info.name} is not a planted model (2 layers of {N_HEADS} heads, learned positions); "
                             "build one with interp.circuits.planted.build_planted")  # fmt: skip
    known = (
        {SUCCESSOR_TASK: POSITIONAL} if graph.has_mlp else {TASK_NAME: POSITIONAL, "induction": POSITIONAL + SAME_END}
    )
    if task.name not in known:
        raise WorkbenchError(f"the ground truth of {model.info.name} is known for tasks {', '.join(map(repr, known))}, "
                             f"not {task.name!r}; make one with interp.circuits.planted.planted_task")  # fmt: skip
    circuit = CIRCUIT_MLP if graph.has_mlp else CIRCUIT
    assert set(circuit) <= set(graph.edge_names()), sorted(set(circuit) - set(graph.edge_names()))
    return GroundTruth(graph, circuit, known[task.name])


def both_graphs(model: Model, task: Task) -> dict[str, tuple[Model, GroundTruth]]:
    """The planted circuit on our graph ("grouped": k/v inputs per KV head) and on MIB's ("mib": the
    ungrouped copy, q/k/v inputs per query head), each with the model its scores come from (the same
    model twice when it has no grouped-query attention: the two graphs are one)."""
    mib = ungrouped(model)
    return {"grouped": (model, ground_truth(model, task)), "mib": (mib, ground_truth(mib, task))}
