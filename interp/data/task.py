"""Tasks: what every circuit method scores. A task is data, not code.

A `Task` holds clean prompts and their corrupted counterparts as token tensors (BOS first,
right-padded by repeating each prompt's last token; a clean prompt and its corruption always
have the same length, pairs whose lengths differ are refused), each prompt's END (its last real
position, whose next-token prediction is scored; a metric may read another named position as well:
`Task.reads`), the answer and distractor token ids, the metric, and named positions where the task
has them (IOI: IO, S1, S1+1, S2, END; greater-than: YY, and TENS on a digit tokenizer), which source each prompt was
drawn from (`groups`, e.g. IOI's template) and how the prompts were made (`source`, e.g. IOI's
templates, names, part and seed, enough to draw more prompts like them). `load_task` returns a
`TaskSplit`: a scoring part (what attribution sees) and a held-out part (what faithfulness is
measured on); the held-out prompts are drawn apart from the scoring ones (other IOI templates,
other greater-than nouns, other random sequences, other rows of a file).

Metrics (`METRICS`, per prompt, at END unless said; higher = more of the clean behaviour):
- `logit-diff`: logit(answer) - logit(distractor) (the default when there is a distractor);
- `logit`: logit(answer) (induction's default);
- `prob`: softmax probability of the answer;
- `prob-diff`: probability on the "good" candidates minus the "bad" ones (greater-than's where a
  year's two digits are one token, GPT-2's);
- `prob-diff-year`: greater-than over a year written as two digit tokens (SmolLM2's), read at two
  positions, TENS (the tens digit's prediction) and END (the units digit's, after the start year's
  own tens digit T, fed as the prompt's last token: teacher forcing):
      P(year > YY) - P(year <= YY)
        = sum_t side(t) p(t) + p(T) * sum_u next_side(u) p(u | T)
  with p(t) at TENS and p(u | T) at END over the ten digit tokens, side(t) = +1 for t > T, -1 for
  t < T, 0 for T itself (decided by the units digit: next_side(u) = +1 for u > U, -1 for u <= U);
  the greater-than default on such tokenizers (Hanna et al. 2023 score the whole year);
- `prob-diff-tens`: the tens digit alone, sum_t side(t) p(t) at TENS (what greater-than scored on
  digit tokenizers before the whole year; T itself counts on neither side);
- `kl`: -KL(clean || run) over the whole next-token distribution (0 on the clean run itself).
  Its gradient vanishes at the clean run, so plain EAP (gradient at clean) gives all-zero
  scores with it; EAP-IG does not.
Each metric is written once (`metric`), over a `Readout`: the logits at the positions it reads
(`Task.reads`: END, TENS, or TENS and END; `metric_fn`), or, in the replay engines, the final
residual stream there read out through the final norm and only the unembedding columns a metric
needs (`resid_metric`). A metric of one position takes [..., batch, vocab] (or d_model); one of two
positions [..., batch, read, vocab] (`Readout.at(i)`: the i-th). `normalized` is the patching
metric built on any of them: (patched - clean) / (clean - corrupted).

The task sources (the built-in tasks, task files) and `load_task` are interp.data.tasks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Protocol

import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp.errors import WorkbenchError

if TYPE_CHECKING:
    from interp.models import Model

METRICS: tuple[str, ...] = ("logit-diff", "logit", "prob", "prob-diff", "prob-diff-year", "prob-diff-tens", "kl")
READS: dict[str, tuple[str, ...]] = {"prob-diff-year": ("TENS", "END"), "prob-diff-tens": ("TENS",)}  # others: END
BUILTIN: tuple[str, ...] = ("ioi", "greater-than", "induction")
MIN_LAYERS = {"ioi": 2, "induction": 2, "greater-than": 1}  # compositions the task needs at least


@dataclass
class Task:
    """Clean/corrupted prompt pairs with what the metric reads (see the module docstring)."""

    name: str  # "ioi", "greater-than", "induction" or the file's name
    clean: Int[Tensor, "batch pos"]  # clean tokens, BOS first, right-padded
    corrupted: Int[Tensor, "batch pos"]  # corrupted tokens, the same length as the clean ones pair by pair
    end: Int[Tensor, "batch"]  # each prompt's END (its last real position)
    answers: Int[Tensor, "batch"]  # the token the clean prompt should predict at END
    distractors: Int[Tensor, "batch"] | None  # the token it should not (None: no distractor)
    metric: str  # one of METRICS
    positions: dict[str, Int[Tensor, "batch"]] = field(default_factory=dict)  # named positions (END included)
    prompts: list[str] = field(default_factory=list)  # clean texts
    corrupted_prompts: list[str] = field(default_factory=list)  # corrupted texts
    candidates: Int[Tensor, "cand"] | None = None  # prob-diff: the ordered candidate ids
    sides: Int[Tensor, "batch cand"] | None = None  # prob-diff: +1 good, -1 bad, 0 neither, per prompt
    next_sides: Int[Tensor, "batch cand"] | None = None  # prob-diff-year: the sides of the token after END's
    # forced one (greater-than: the units digit's, +1 above the start year's, -1 at or below it)
    min_layers: int = 1  # the shallowest model the task makes sense on
    corruption: str | None = None  # how the corrupted prompts were made, where a task has a choice (IOI: `CORRUPTIONS`)
    groups: Int[Tensor, "batch"] | None = None  # which source each prompt was drawn from (IOI: its expanded template)
    source: dict = field(default_factory=dict)  # how the prompts were made (IOI: templates, names, part, seed)

    def __post_init__(self):
        self.positions.setdefault("END", self.end)
        if self.clean.shape != self.corrupted.shape:
            raise WorkbenchError(
                f"task {self.name!r}: clean tokens {tuple(self.clean.shape)} and corrupted {tuple(self.corrupted.shape)} "
                "differ in shape; every pair must tokenize to the same length"
            )
        check_metric(self, self.metric)

    def __len__(self) -> int:
        return self.clean.shape[0]

    @property
    def device(self) -> torch.device:
        return self.clean.device

    def subset(self, idx) -> Task:
        idx = torch.as_tensor(idx, dtype=torch.long)
        keep = int(self.end[idx].max()) + 1
        pick = lambda x: None if x is None else x[idx.to(x.device)]  # noqa: E731
        return replace(
            self,
            clean=self.clean[idx.to(self.device), :keep],
            corrupted=self.corrupted[idx.to(self.device), :keep],
            end=self.end[idx],
            answers=self.answers[idx],
            distractors=pick(self.distractors),
            positions={k: v[idx] for k, v in self.positions.items()},
            prompts=[self.prompts[i] for i in idx.tolist()] if self.prompts else [],
            corrupted_prompts=[self.corrupted_prompts[i] for i in idx.tolist()] if self.corrupted_prompts else [],
            sides=pick(self.sides),
            next_sides=pick(self.next_sides),
            groups=pick(self.groups),
        )

    def split(self, n_first: int) -> tuple[Task, Task]:
        return self.subset(range(n_first)), self.subset(range(n_first, len(self)))

    def chunks(self, size: int) -> list[Task]:
        """The prompts in consecutive pieces of at most `size` (each trimmed to its own width)."""
        return [self.subset(range(i, min(i + size, len(self)))) for i in range(0, len(self), size)]

    def swapped(self) -> Task:
        """The same pairs with clean and corrupted exchanged (answers kept): the denoising view."""
        return replace(self, clean=self.corrupted, corrupted=self.clean, prompts=self.corrupted_prompts,
                       corrupted_prompts=self.prompts)  # fmt: skip

    def with_metric(self, metric: str) -> Task:
        return replace(self, metric=check_metric(self, metric))

    def to(self, device) -> Task:
        return replace(self, clean=self.clean.to(device), corrupted=self.corrupted.to(device))

    @property
    def lengths(self) -> Int[Tensor, "batch"]:
        """Each prompt's length (END + 1)."""
        return self.end + 1

    def on(self, device) -> Task:
        """The task with everything its metric reads on `device` (no host-device copies in hot loops)."""
        move = lambda x: None if x is None else x.to(device)  # noqa: E731
        return replace(self, end=self.end.to(device), answers=self.answers.to(device), distractors=move(self.distractors),
                       sides=move(self.sides), next_sides=move(self.next_sides), candidates=move(self.candidates))  # fmt: skip

    @property
    def reads(self) -> Int[Tensor, "batch"] | Int[Tensor, "batch read"]:
        """The positions the metric reads, per prompt (`READS`): one, [batch] (END for every metric but
        prob-diff-tens, which reads TENS), or two, [batch read] (prob-diff-year: TENS, then END)."""
        got = [self.end if n == "END" else self.positions[n] for n in READS.get(self.metric, ("END",))]
        return got[0] if len(got) == 1 else torch.stack(got, -1)

    def position(self, name: str | None) -> Int[Tensor, "batch"] | None:
        """A named position's index per prompt, or None for every position ('all' or None)."""
        if name is None or name == "all":
            return None
        if name not in self.positions:
            raise WorkbenchError(f"task {self.name!r} has no position {name!r}; choose one of {list(self.positions)} or 'all'")
        return self.positions[name]

    def check(self, model: Model) -> Task:
        """Refuse a model the task cannot run on (too shallow, too short a context, too small a vocabulary)."""
        info = model.info
        if info.n_layers < self.min_layers:
            raise WorkbenchError(
                f"{info.name} has {info.n_layers} layer(s); the {self.name} task needs at least {self.min_layers} "
                "(a circuit for it composes heads across layers): use a deeper model"
            )
        if self.clean.shape[1] > info.n_ctx:
            raise WorkbenchError(f"task prompts are {self.clean.shape[1]} tokens but {info.name} reads {info.n_ctx}; shorten them")
        top = max(int(self.clean.max()), int(self.corrupted.max()), int(self.answers.max()))
        if top >= info.d_vocab:
            raise WorkbenchError(f"task token id {top} is outside {info.name}'s vocabulary ({info.d_vocab}); "
                                 "build the task with this model's tokenizer")  # fmt: skip
        return self


def check_metric(task: Task, metric: str) -> str:
    if metric not in METRICS:
        raise WorkbenchError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
    if metric == "logit-diff" and task.distractors is None:
        raise WorkbenchError(f"task {task.name!r} has no distractor tokens, so no logit difference; use metric 'logit' or 'prob'")
    if metric == "prob-diff" and task.sides is None:
        raise WorkbenchError(f"metric 'prob-diff' needs good/bad candidate tokens, which task {task.name!r} lacks")
    if metric == "prob-diff" and task.next_sides is not None:
        raise WorkbenchError(f"task {task.name!r} writes the year as two digit tokens: use metric 'prob-diff-year' "
                             "(the whole year, its default) or 'prob-diff-tens' (the tens digit alone)")  # fmt: skip
    if metric in READS and (task.sides is None or any(n not in task.positions for n in READS[metric])
                            or (metric == "prob-diff-year" and task.next_sides is None)):  # fmt: skip
        raise WorkbenchError(f"metric {metric!r} reads a year written as two digit tokens (greater-than on a digit "
                             f"tokenizer), which task {task.name!r} lacks; use 'prob-diff' or the task's own metric")  # fmt: skip
    if metric == "prob-diff-year":
        forced = task.clean[torch.arange(len(task.end), device=task.device), task.end.to(task.device)]
        at = (task.candidates.to(forced.device)[None, :] == forced[:, None]).cpu()  # [batch cand]
        if not bool((at.sum(1) == 1).all()) or bool((task.sides.cpu()[at] != 0).any()):
            raise WorkbenchError(f"task {task.name!r}: each prompt's last token must be the candidate its first "
                                 "read leaves undecided (side 0), fed so the next token decides it")  # fmt: skip
    return metric


@dataclass
class TaskSplit:
    """A task's scoring prompts and its held-out prompts."""

    score: Task
    heldout: Task

    @property
    def name(self) -> str:
        return self.score.name


# -- metrics ---------------------------------------------------------------------------------------

MetricFn = Callable[[Tensor], Tensor]  # logits at the reads [..., batch, (read,) vocab] -> [..., batch]


class Readout(Protocol):
    """What a metric reads of a run at each prompt's read position(s) ([..., batch] leading axes alike)."""

    def take(self, ids: Int[Tensor, "batch"]) -> Float[Tensor, "... batch"]:
        """The logit of one token per prompt."""

    def logits(self) -> Float[Tensor, "... batch vocab"]:
        """Every logit."""

    def at(self, i: int) -> Readout:
        """The i-th of several read positions (a Readout over [..., batch, read, ...])."""


class LogitsReadout:
    """A Readout of logits at the read position(s)."""

    def __init__(self, logits: Tensor):
        self.all = logits

    def at(self, i: int) -> LogitsReadout:
        return LogitsReadout(self.all[..., i, :])

    def take(self, ids: Tensor) -> Tensor:
        ids = ids.to(self.all.device).view(*([1] * (self.all.dim() - 2)), -1, 1).expand(*self.all.shape[:-1], 1)
        return self.all.gather(-1, ids)[..., 0]

    def logits(self) -> Tensor:
        return self.all


def end_logits(logits: Float[Tensor, "batch pos vocab"], end: Int[Tensor, "batch"] | Int[Tensor, "batch read"]
               ) -> Float[Tensor, "batch vocab"] | Float[Tensor, "batch read vocab"]:  # fmt: skip
    """Each prompt's logits at its END, or at each of its read positions (`Task.reads`, [batch read] ->
    [batch read vocab]); logits may stack several copies of the batch."""
    reps = logits.shape[0] // len(end)
    e = end.to(logits.device).repeat(reps, *([1] * (end.dim() - 1)))
    rows = torch.arange(logits.shape[0], device=logits.device).view(-1, *([1] * (end.dim() - 1)))
    return logits[rows, e]


def metric(task: Task, clean_end: Float[Tensor, "batch vocab"] | None = None) -> Callable[[Readout], Tensor]:
    """The task's metric of a Readout (the one definition of each metric; see the module docstring).
    `kl` needs the clean run's logits at END."""
    answers, distractors, kind = task.answers, task.distractors, task.metric
    if kind == "prob-diff-year":
        return _year_prob_diff(task)
    if kind == "logit-diff":
        return lambda r: r.take(answers) - r.take(distractors)
    if kind == "logit":
        return lambda r: r.take(answers)
    if kind == "prob":
        return lambda r: LogitsReadout(r.logits().float().softmax(-1)).take(answers)
    if kind in ("prob-diff", "prob-diff-tens"):  # the same sum; prob-diff-tens reads TENS (Task.reads)
        cand, sides = task.candidates, task.sides.float()
        return lambda r: _signed(_probs(r, cand), sides)
    if clean_end is None:
        raise WorkbenchError("the kl metric needs the clean run's logits")
    ref = clean_end.detach().float().log_softmax(-1)

    def neg_kl(r: Readout) -> Tensor:
        logp = r.logits().float().log_softmax(-1)
        c = ref.to(logp.device)
        return -(c.exp() * (c - logp)).sum(-1)

    return neg_kl


def _probs(r: Readout, cand: Int[Tensor, "cand"]) -> Float[Tensor, "... batch cand"]:
    """Softmax probabilities (over the whole vocabulary) of the candidate tokens."""
    logits = r.logits()
    return logits.float().softmax(-1)[..., cand.to(logits.device)]


def _signed(p: Float[Tensor, "... batch cand"], sides: Float[Tensor, "batch cand"]) -> Float[Tensor, "... batch"]:
    return (p * sides.to(p.device)).sum(-1)


def _year_prob_diff(task: Task) -> Callable[[Readout], Tensor]:
    """prob-diff-year (see the module docstring): sum side p(first) + p(forced) * sum next_side p(next),
    the forced token being each prompt's token at END (what its first read leaves undecided)."""
    cand, sides, after = task.candidates, task.sides.float(), task.next_sides.float()
    forced = task.clean[torch.arange(len(task.end), device=task.device), task.end.to(task.device)]
    gate = (cand.to(forced.device)[None, :] == forced[:, None]).float()  # [batch cand]: one-hot of the forced token

    def year(r: Readout) -> Tensor:
        first, then = _probs(r.at(0), cand), _probs(r.at(1), cand)
        return _signed(first, sides) + _signed(first, gate) * _signed(then, after)

    return year


def metric_fn(task: Task, clean_end: Float[Tensor, "batch vocab"] | None = None) -> MetricFn:
    """The task's metric as a function of the logits at its reads (`Task.reads`), [..., batch, (read,)
    vocab] -> [..., batch] (any leading variant axes broadcast). `kl` needs the clean run's logits there."""
    m = metric(task, clean_end)
    return lambda logits: m(LogitsReadout(logits))


class ResidReadout:
    """A Readout of final residual streams at the read position(s) [..., batch, (read,) d_model] of a
    model's bridge: its final norm, then only the unembedding columns a metric asks for (all of them
    when it asks for every logit)."""

    def __init__(self, bridge, resid: Tensor | None, normed: Tensor | None = None):
        self.bridge = bridge
        from interp.bridge import fast_norm

        # the final norm's own module: the bridge's wrapper gives the same output, at several times the cost
        self.x = fast_norm(bridge.ln_final)(resid.to(bridge.W_U.device)) if normed is None else normed
        self.b_U = getattr(bridge, "b_U", None)

    def at(self, i: int) -> ResidReadout:
        return ResidReadout(self.bridge, None, self.x[..., i, :])

    def take(self, ids: Tensor) -> Tensor:
        W_U = self.bridge.W_U
        ids = ids.to(W_U.device)
        out = torch.einsum("...bd,db->...b", self.x, W_U[:, ids].to(self.x.dtype))
        return out if self.b_U is None else out + self.b_U[ids].to(self.x.dtype)

    def logits(self) -> Tensor:
        out = self.x @ self.bridge.W_U.to(self.x.dtype)
        return out if self.b_U is None else out + self.b_U.to(self.x.dtype)


def resid_metric(bridge, task: Task, clean_end: Float[Tensor, "batch vocab"] | None = None):
    """The task's metric as a function of the final residual stream at its reads (`Task.reads`),
    [..., batch, (read,) d_model] -> [..., batch] (what the replay engines produce instead of logits).
    `kl` needs the clean run's logits there."""
    m = metric(task, clean_end)
    return lambda resid: m(ResidReadout(bridge, resid))


def normalized(patched: Float[Tensor, "..."], clean: float | Tensor, corrupted: float | Tensor) -> Float[Tensor, "..."]:
    """(patched - clean) / (clean - corrupted): 0 when patching changes nothing, -1 when it brings the
    metric all the way to the corrupted value."""
    return (patched - clean) / (clean - corrupted)
