"""The shared words of the workbench: what a head is, how progress is reported, the modes of
ablation and patching, and one vocabulary of tensor axis names.

Axis names used in every `Float[Tensor, "..."]` annotation (one spelling each):
  batch   prompts or sequences          pos     token positions (dest / src inside a pattern)
  layer   transformer blocks            head    query heads of a layer
  kv      key/value heads (GQA)         d_model residual stream width
  d_head  width of one head             d_mlp   MLP hidden width (neuron = one of them)
  vocab   vocabulary                    kind    head kinds (previous-token, ...)
  sender  path-patching senders         config  ablation configurations
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, get_args

from jaxtyping import Float, Int
from torch import Tensor

Head = tuple[int, int]
"""(layer, query head). GQA models report per query head; query head h reads key/value head
h // (n_heads // n_kv_heads), as TransformerLens and HF repeat-interleave KV heads."""

Progress = Callable[[int, int, str], None]
"""progress(done, total, message): how long work reports how far it got. Front ends turn it
into a tqdm bar (CLI) or an st.progress bar (dashboard); the library never draws one."""

AblationMode = Literal["mean", "zero"]
ABLATION_MODES: tuple[str, ...] = get_args(AblationMode)  # mean: replace by the mean over data; zero: by 0

Component = Literal["q", "k", "v"]
COMPONENTS: tuple[str, ...] = get_args(Component)  # the inputs of a receiver head that path patching edits

Switch = Literal["off", "on"]
SWITCHES: tuple[str, ...] = get_args(Switch)  # a memory intervention: coefficient 0, or a high coefficient

# -- the modes of circuit work (interp.circuits; IOI's corruption is also the data layer's) ----------
EdgeAblation = Literal["counterfactual", "mean"]
EDGE_ABLATIONS: tuple[str, ...] = get_args(EdgeAblation)
# what an ablated edge's input reads instead of its writer: the writer's output on the corrupted prompt
# of the same pair (counterfactual, MIB's "patching"), or its mean over the scoring prompts (mean)
Ranking = Literal["abs", "signed"]
RANKINGS: tuple[str, ...] = get_args(Ranking)  # how edges are ordered into circuits: by |score| or by score
Corruption = Literal["abc", "s2-io", "new-s"]
CORRUPTIONS: tuple[str, ...] = get_args(Corruption)
# IOI's corrupted prompt: three unrelated names (abc, Wang et al.), the second S becomes IO (s2-io, MIB's
# s2_io_flip), or both S become one new name (new-s)
GradientAt = Literal["clean", "corrupted"]
GRADIENT_AT: tuple[str, ...] = get_args(GradientAt)  # where EAP takes its gradient

MODES: dict[str, tuple[str, ...]] = {
    "ablation": EDGE_ABLATIONS, "ranking": RANKINGS, "IOI corruption": CORRUPTIONS, "gradient position": GRADIENT_AT,
}  # fmt: skip

# Tensor shapes that recur across modules.
Tokens = Int[Tensor, "batch pos"]
Logits = Float[Tensor, "batch pos vocab"]
Pattern = Float[Tensor, "batch head dest src"]
HeadGrid = Float[Tensor, "layer head"]
Resid = Float[Tensor, "batch pos d_model"]
HeadZ = Float[Tensor, "batch pos head d_head"]


def check_choice(value: str, choices: tuple[str, ...], what: str) -> str:
    """`value` if it is one of `choices`, else a one-line WorkbenchError listing them."""
    from interp.errors import WorkbenchError

    if value not in choices:
        raise WorkbenchError(f"unknown {what} {value!r}; choose {' or '.join(repr(c) for c in choices)}")
    return value


def check_mode(kind: str, value: str) -> str:
    """`value` if it is one of the circuit modes `MODES[kind]`, else a one-line WorkbenchError (the one
    place every mode is checked: the CLI, the dashboard and the library call it)."""
    return check_choice(value, MODES[kind], kind)
