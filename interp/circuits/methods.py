"""The registry of edge-scoring methods: a name -> a function from (model, task, options) to EdgeScores.

    score_edges(model, task, "eap-ig", steps=5)      # any registered method, checked in one place
    names()                                          # ('eap-ig', 'eap', 'exact'): what the CLI, the
                                                     # dashboard and the benchmarks offer

The built-in methods register below, each from its own module: EAP and EAP-IG (interp.circuits.
attribute), exact patching (interp.circuits.edges). Adding a method is one new module with a function
`(model, task, options) -> EdgeScores` and one `register(...)` line here, which also says what the
method costs (prompt-forwards for n scoring prompts, rows a gradient pass keeps: interp.circuits.cost
reads them); `register` refuses a name taken twice (SAELens's `register_sae_class` does the same; no
eval anywhere).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from interp.circuits import attribute, edges, masks
from interp.circuits.types import EdgeScores, Graph
from interp.data.task import Task
from interp.errors import WorkbenchError
from interp.types import Progress, check_mode

if TYPE_CHECKING:
    from interp.models import Model


@dataclass
class Options:
    """The settings a scoring method may read (each method reads its own)."""

    steps: int = 5  # EAP-IG integration steps
    at: str = "clean"  # EAP: where the gradient is taken ('clean' or 'corrupted')
    batch_size: int = 80  # rows (prompts x steps) per forward+backward of the gradient methods
    progress: Progress | None = None


Scorer = Callable[["Model", Task, Options], EdgeScores]


@dataclass(frozen=True)
class Method:
    name: str
    score: Scorer
    help: str  # one line for the CLI and the dashboard
    forwards: Callable[[Options, int, Graph], float]  # prompt-forwards to score n prompts (a backward counts two)
    rows: Callable[[Options, int], int] = lambda o, n: 0  # rows one gradient pass keeps for n prompts (0: none)
    check: Callable[[Options], None] | None = None  # refuses bad options before any model work


_REGISTRY: dict[str, Method] = {}


def register(name: str, score: Scorer, help: str, forwards: Callable[[Options, int, Graph], float],
             rows: Callable[[Options, int], int] = lambda o, n: 0, check: Callable[[Options], None] | None = None) -> Method:  # fmt: skip
    """Add a method; a name already taken is refused."""
    if name in _REGISTRY:
        raise ValueError(f"an edge-scoring method named {name!r} is registered already")
    _REGISTRY[name] = Method(name, score, help, forwards, rows, check)
    return _REGISTRY[name]


def names() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def get(name: str) -> Method:
    """The method called `name` (a one-line WorkbenchError listing the registered ones otherwise)."""
    if name not in _REGISTRY:
        raise WorkbenchError(f"unknown method {name!r}; choose {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


def check(name: str, options: Options) -> Method:
    """The method, with its options checked (before any model work)."""
    method = get(name)
    if options.batch_size < 1:
        raise WorkbenchError(f"a batch of {options.batch_size} rows: choose at least 1")
    if method.check is not None:
        method.check(options)
    return method


def score_edges(model: Model, task: Task, method: str = "eap-ig", steps: int = 5, at: str = "clean",
                batch_size: int = 80, progress: Progress | None = None) -> EdgeScores:  # fmt: skip
    """Score every edge of the model's graph on `task` by a registered method."""
    options = Options(steps, at, batch_size, progress)
    m = check(method, options)
    task.check(model)
    return m.score(model, task, options)


# -- the built-in methods ---------------------------------------------------------------------------


def _check_steps(o: Options) -> None:
    if o.steps < 1:
        raise WorkbenchError(f"EAP-IG needs at least 1 step (got {o.steps})")


register("eap-ig", lambda model, task, o: attribute.eap_ig(model, task, o.steps, o.batch_size, o.progress),
         "integrated gradients over the input embeddings (Hanna et al. 2024; MIB's EAP-IG-inputs)",
         lambda o, n, g: n * (1 + 3 * o.steps), lambda o, n: min(o.batch_size, n * o.steps), _check_steps)  # fmt: skip
register("eap-ig-act", lambda model, task, o: attribute.eap_ig_activations(model, task, o.steps, o.batch_size, o.progress),
         "integrated gradients over each component's output, one component at a time (MIB's EAP-IG-activations)",
         lambda o, n, g: n * (2 + 3 * o.steps * len(attribute.components(g))),
         lambda o, n: min(o.batch_size, n * o.steps * 3), _check_steps)  # fmt: skip  (3: at least 3 components)
register("edge-pruning", lambda model, task, o: masks.learn(model, task, masks.MaskConfig(warm_steps=o.steps), progress=o.progress),
         "learned edge masks (Edge Pruning, Bhaskar et al. 2024): hard-concrete gates trained to keep the output at 5% of edges, from EAP-IG",
         lambda o, n, g: masks.forwards(masks.MaskConfig(warm_steps=o.steps), n), lambda o, n: 2 * min(o.batch_size, n * o.steps), _check_steps)  # fmt: skip
register("eap", lambda model, task, o: attribute.eap(model, task, o.at, o.batch_size, o.progress),
         "one gradient at the clean run (Syed et al. 2023)", lambda o, n, g: n * 6, lambda o, n: min(o.batch_size, n),
         lambda o: check_mode("gradient position", o.at))  # fmt: skip
register("exact", lambda model, task, o: edges.edge_effects(model, task, progress=o.progress),
         "one patched run per edge, batched (small models: SmolLM2 takes hours on a CPU)",
         lambda o, n, g: n * (2 + edges.forwards_per_prompt(g)))  # fmt: skip
