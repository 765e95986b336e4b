"""What a circuit run will cost, told before it starts (`interp circuit`, the dashboard's Circuit view).

Work is counted in prompt-forwards: one forward pass of one task prompt through the whole model,
a backward counting as two. Stage by stage (interp.circuits.report.find_circuit):

    scores       eap-ig  prompts x (1 + 3 x steps)   a plain run, then a forward+backward per step
                 eap     prompts x 6                 (benchmarks/RESULTS.md, SmolLM2 on the CPU: 17 and 5.6)
                 exact   prompts x (2 + sum over edges of the share of the model above the edge's
                         input): the batched engine replays only from the input's layer up
                         (SmolLM2: 24,371 forwards for its 70,651 edges, a third of a forward each)
    curves       2 rankings x held-out x (3 + sizes)  the setup, then about a forward a size (13.5 measured)
    exact check  prompts x (2 + top edges)            at most (nothing when the method is exact)
    random       draws x held-out x (sizes - 1)       MIB's Random row: random circuits of every size

Time is that count times the seconds of one prompt-forward, measured on the task's own (padded,
so longest) prompts after a short warm-up: an estimate within a factor of about two, which is
what a budget needs (exact patching on SmolLM2, 8 IOI prompts, the CPU: the edges into layer 15
took 464 s against 365 s estimated, into layer 25 195 s against 193 s). Memory: the gradient stages keep every layer's attention pattern and
activations of one batch of rows (prompts x stacked steps) for the backward; the estimate is
rows x layers x (3 x heads x tokens^2 + 16 x d_model x tokens) x 4 bytes, checked against the
device's free memory (it is what long prompts exhaust first).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from interp.errors import WorkbenchError

if TYPE_CHECKING:
    from interp.circuits.types import Graph
    from interp.data.tasks import TaskSplit
    from interp.models import Model

N_RANKINGS = 2  # find_circuit measures the curve by |score| and by signed score


@dataclass
class Cost:
    """A run's work by stage (prompt-forwards), its time and its peak memory, estimated."""

    stages: dict[str, float] = field(default_factory=dict)  # stage -> prompt-forwards
    seconds_per_forward: float = 0.0  # one prompt-forward, measured
    peak_bytes: int = 0  # the gradient stages' activations (0: the method takes no gradient)
    tokens: int = 0  # tokens a prompt (padded)

    @property
    def forwards(self) -> float:
        return sum(self.stages.values())

    @property
    def seconds(self) -> float:
        return self.forwards * self.seconds_per_forward

    def summary(self) -> str:
        parts = ", ".join(f"{name} {n:,.0f}" for name, n in self.stages.items())
        return (f"{self.forwards:,.0f} prompt-forwards of {self.tokens} tokens ({parts}) at "
                f"{self.seconds_per_forward * 1e3:.3g} ms each")  # fmt: skip


def duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def count(method: str, steps: int, graph: Graph, n_layers: int, n_prompts: int, n_heldout: int, exact_top: int,
          n_sizes: int, random_draws: int = 0) -> dict[str, float]:  # fmt: skip
    """Prompt-forwards by stage (the module docstring's table; the scoring stage is what the method's
    registration says it costs)."""
    from interp.circuits import methods

    scores = methods.get(method).forwards(methods.Options(steps=steps), n_prompts, graph)
    stages = {"scores": scores, "curves": N_RANKINGS * n_heldout * (3 + n_sizes)}
    if exact_top and method != "exact":
        stages["exact check"] = n_prompts * (2 + min(exact_top, graph.n_edges))
    if random_draws:  # random circuits of every size but the full one (the empty ones cost nothing either)
        stages["random baseline"] = random_draws * n_heldout * max(0, n_sizes - 1)
    return stages


def gradient_bytes(model: Model, tokens: int, rows: int) -> int:
    """Activations one forward+backward of `rows` rows keeps (the module docstring's formula)."""
    info = model.info
    per_layer = 3 * info.n_heads * tokens**2 + 16 * info.d_model * tokens
    return int(rows * info.n_layers * per_layer * 4)


@torch.no_grad()
def seconds_per_forward(model: Model, tokens: torch.Tensor, sample: int = 4, repeats: int = 2) -> float:
    """Seconds of one prompt-forward: a few of the task's prompts, after a warm-up on their first
    tokens (a fresh process's first forward costs several times more), timed `repeats` times; the
    fastest is kept (other load on the machine only adds)."""
    width = tokens.shape[1]
    sample = max(1, min(sample, 8192 // max(width, 1), len(tokens)))
    sync = torch.cuda.synchronize if model.device.type == "cuda" else (lambda: None)
    model.bridge(tokens[:sample, : min(width, 32)])
    best = float("inf")
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        model.bridge(tokens[:sample])
        sync()
        best = min(best, time.perf_counter() - start)
    return best / sample


def estimate(model: Model, split: TaskSplit, method: str, steps: int, exact_top: int, batch_size: int,
             n_sizes: int, graph: Graph | None = None, random_draws: int = 0) -> Cost:  # fmt: skip
    """The cost of `find_circuit` with these settings on this model and split. A run whose
    gradients cannot fit the device's free memory is refused here, before the timed forward (a
    20,000-character prompt's forward alone takes a while)."""
    from interp.circuits.types import Graph

    graph = graph or Graph.of(model)
    P, H = len(split.score), len(split.heldout)
    stages = count(method, steps, graph, model.info.n_layers, P, H, exact_top, n_sizes, random_draws)
    tokens = max(split.score.clean.shape[1], split.heldout.clean.shape[1])
    from interp.circuits import methods

    rows = methods.get(method).rows(methods.Options(steps=steps, batch_size=batch_size), P)
    cost = Cost(stages, 0.0, gradient_bytes(model, tokens, rows), tokens)
    _check_memory(cost, model.device)
    cost.seconds_per_forward = seconds_per_forward(model, split.score.clean)
    return cost


def _check_memory(cost: Cost, device: torch.device) -> None:
    from interp.models.device import available_bytes

    free = available_bytes(device)
    if free is not None and cost.peak_bytes > free:
        raise WorkbenchError(f"the gradients would keep about {cost.peak_bytes / 1e9:,.1f} GB of activations "
                             f"({cost.tokens}-token prompts) but {device} has {free / 1e9:,.1f} GB free; shorten the "
                             "prompts or lower the batch size")  # fmt: skip


def check(cost: Cost, max_minutes: float, how_to_raise: str) -> None:
    """Refuse a run estimated above the time budget; `how_to_raise` says how to raise it."""
    if cost.seconds > max_minutes * 60:
        raise WorkbenchError(f"this run would take about {duration(cost.seconds)} ({cost.summary()}), more than the "
                             f"budget of {max_minutes:g} min; {how_to_raise}, or ask for less (eap-ig rather than "
                             "exact, fewer prompts or steps, shorter prompts)")  # fmt: skip
