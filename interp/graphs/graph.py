"""The attribution graph as pure data: nodes in circuit-tracer's order and the dense adjacency.

Nodes, in this order (circuit-tracer's, so its pruning and scores read the same indices):

    features   active transcoder latents (layer, pos, feature), sorted by layer, then position, feature
    errors     one per (layer, pos), layer-major: index n_features + layer * n_pos + pos
    tokens     one per position: the embedding (plus the positional embedding where the model has one)
    logits     the chosen output tokens at the last position, most likely first

adjacency[target, source] is the direct effect of the source's output on the target's input through
the frozen model (interp.graphs.replacement): a feature's target is its encoder pre-activation, a
logit's the logit minus the mean logit over the vocabulary. Only feature and logit rows are filled;
error and token nodes have no inputs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from jaxtyping import Float, Int
from torch import Tensor


def visual(text: str) -> str:
    """A token as shown (circuit-tracer's process_token): control characters as arrows."""
    return text.replace("\n", "⏎").replace("\t", "→").replace("\r", "↵")


@dataclass
class Graph:
    prompt: str
    tokens: list[int]  # the prompt's token ids (BOS included when the model prepends it)
    str_tokens: list[str]
    n_layers: int
    features: Int[Tensor, "feature 3"]  # (layer, pos, feature index) of every feature node
    activations: Float[Tensor, " feature"]  # their activations in the real run
    logit_tokens: Int[Tensor, " logit"]  # vocabulary ids of the logit nodes
    logit_probs: Float[Tensor, " logit"]  # their probabilities in the real run
    logit_strs: list[str]
    adjacency: Float[Tensor, "node node"]  # [target, source]
    values: Float[Tensor, " node"]  # each target's value in the real run (pre-activation, centred logit); 0 elsewhere
    constants: Float[Tensor, " node"]  # what every non-node term (biases, BOS's writes) adds to each target
    model: dict = field(default_factory=dict)  # name, n_layers, d_model of the model
    settings: dict = field(default_factory=dict)  # how it was made (max_n_logits, zero_bos, transcoders...)

    # -- sizes and slices ---------------------------------------------------------------------------
    @property
    def n_pos(self) -> int:
        return len(self.tokens)

    @property
    def n_features(self) -> int:
        return int(self.features.shape[0])

    @property
    def n_errors(self) -> int:
        return self.n_layers * self.n_pos

    @property
    def n_logits(self) -> int:
        return int(self.logit_tokens.shape[0])

    @property
    def n_nodes(self) -> int:
        return self.n_features + self.n_errors + self.n_pos + self.n_logits

    @property
    def error_start(self) -> int:
        return self.n_features

    @property
    def token_start(self) -> int:
        return self.n_features + self.n_errors

    @property
    def logit_start(self) -> int:
        return self.token_start + self.n_pos

    def error_index(self, layer: int, pos: int) -> int:
        return self.error_start + layer * self.n_pos + pos

    def token_index(self, pos: int) -> int:
        return self.token_start + pos

    def logit_index(self, j: int) -> int:
        return self.logit_start + j

    def target_rows(self) -> Int[Tensor, " row"]:
        """Indices of the nodes that have inputs: features and logits."""
        return torch.cat([torch.arange(self.n_features), torch.arange(self.logit_start, self.n_nodes)])

    # -- naming -------------------------------------------------------------------------------------
    def kind(self, i: int) -> str:
        if i < self.error_start:
            return "feature"
        if i < self.token_start:
            return "error"
        if i < self.logit_start:
            return "token"
        return "logit"

    def describe(self, i: int) -> dict:
        """One node as data: its kind, layer ("E" tokens, n_layers logits), position and identity."""
        kind = self.kind(i)
        if kind == "feature":
            layer, pos, f = (int(x) for x in self.features[i])
            return {"kind": kind, "layer": layer, "pos": pos, "feature": f, "activation": float(self.activations[i]),
                    "id": f"F{layer}.{f}@{pos}"}  # fmt: skip
        if kind == "error":
            layer, pos = divmod(i - self.error_start, self.n_pos)
            return {"kind": kind, "layer": layer, "pos": pos, "id": f"err{layer}@{pos}"}
        if kind == "token":
            pos = i - self.token_start
            return {"kind": kind, "layer": "E", "pos": pos, "token": self.tokens[pos], "text": self.str_tokens[pos],
                    "id": f"tok@{pos}"}  # fmt: skip
        j = i - self.logit_start
        return {"kind": kind, "layer": self.n_layers, "pos": self.n_pos - 1, "token": int(self.logit_tokens[j]),
                "text": self.logit_strs[j], "prob": float(self.logit_probs[j]), "id": f"logit{j}"}  # fmt: skip

    def find(self, node_id: str) -> int:
        """The index of a node named as `describe` names it (one-line error for an unknown one)."""
        from interp.errors import WorkbenchError

        for i in range(self.n_nodes):
            if self.describe(i)["id"] == node_id:
                return i
        raise WorkbenchError(f"no node {node_id!r} in this graph; name a feature as F<layer>.<feature>@<pos>, "
                             "an error as err<layer>@<pos>, a token as tok@<pos>, a logit as logit<j>")  # fmt: skip
