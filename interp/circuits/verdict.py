"""Verdicts on a circuit: faithful, complete, minimal, each by one stated rule and with the numbers
that decided it. Pure functions of the figures (no model, no files), shared by `interp circuit`,
`interp ioi`, edges.json and the dashboard's Circuit and IOI views, so the word printed, the word
saved and the word shown are one word with one reason.

    v = faithfulness(0.06, 0.01, 0.11, what="f at 5% of edges")
    v.line()   # 'not faithful: f at 5% of edges is 0.060 [0.010, 0.110], below 0.8 ...'
    v.rule     # the rule, stated

The rules (GOAL and MAX_INCOMPLETENESS are our lines; MIN_MINIMALITY is interp.circuits.evaluate's):
- faithful: f >= GOAL, the lower end of its 95% interval >= GOAL too, and, where random circuits of
  the same size were measured, that lower end above the best of them. Not faithful: f < GOAL. Not
  shown faithful: f >= GOAL but its interval reaches below GOAL (or there is none), or random
  circuits do as well. f undefined (not a number): no verdict.
- complete: incompleteness (the largest |F(C \\ K) - F(M \\ K)| / |F(M)| over the K tried) and the
  upper end of its interval <= MAX_INCOMPLETENESS. Not complete: incompleteness above it. Not shown
  complete: below it, but its interval reaches above.
- minimal: every head's interval's lower end >= the minimality threshold (a share of F(C)); each
  head that fails is named with its numbers.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

GOAL = 0.8  # f a circuit needs to be called faithful (the line the README and notebooks quote)
MAX_INCOMPLETENESS = 0.2  # the largest gap, as a share of |F(M)|, a complete circuit may leave (Wang et al. set none)
LISTED = 5  # failing heads named in a minimality verdict, the lowest first (the rest counted)


@dataclass(frozen=True)
class Verdict:
    """One verdict: its word, whether the rule is met, why (the numbers) and the rule itself."""

    word: str  # "faithful", "not faithful", "not shown faithful", "complete", ..., "no verdict"
    passed: bool  # the rule is met
    why: str  # the numbers that decided it, and what to try where it failed
    rule: str  # the rule, stated in one sentence

    def line(self) -> str:
        return f"{self.word}: {self.why}"

    def to_dict(self) -> dict:
        return {"word": self.word, "passed": self.passed, "text": self.line(), "why": self.why, "rule": self.rule}


def _finite(*xs) -> bool:
    return all(x is not None and isinstance(x, (int, float)) and math.isfinite(x) for x in xs)


def num(x: float | None, line: float | None = None) -> str:
    """`x` to 3 decimals, or to as many more (up to 6) as it takes not to read as `line` where it is
    not `line` (0.0499 beside 0.05 reads 0.0499, not 0.050)."""
    if not _finite(x):
        return str(x)
    for d in range(3, 7):
        if line is None or x == line or f"{x:.{d}f}" != f"{line:.{d}f}":
            return f"{x:.{d}f}"
    return f"{x:.6f}"


def _with_interval(value: float | None, lo: float | None, hi: float | None, line: float | None = None) -> str:
    v = num(value, line)
    return f"{v} [{num(lo, line)}, {num(hi, line)}]" if _finite(lo, hi) else f"{v} (no interval)"


def faithfulness_rule(goal: float = GOAL, random: bool = True, symbol: str = "f") -> str:
    return (f"faithful when {symbol} >= {goal:g} and the lower end of its 95% interval is >= {goal:g}"
            + (" and above every random circuit of the same size" if random else "")
            + f"; not faithful when {symbol} < {goal:g}")  # fmt: skip


def faithfulness(
    f: float,
    lo: float | None,
    hi: float | None,
    what: str = "f",
    random: tuple[float, float, float] | None = None,
    goal: float = GOAL,
    fix: str = "",
    n_draws: int | None = None,
    symbol: str = "f",
) -> Verdict:
    """Whether a circuit of faithfulness `f` [`lo`, `hi`] (95% interval; None or NaN: none) is faithful,
    beside `random` circuits of the same size ((mean, min, max) over `n_draws` draws; None: not measured).
    `what` names the figure ("f at 5% of edges"), `symbol` it in the rule; `fix` says what to try when it
    is not faithful."""
    rule = faithfulness_rule(goal, random is not None, symbol)
    if not _finite(f):
        return Verdict("no verdict", False, f"{what} is undefined ({f}): the full model and the empty circuit "
                       "score the same on these prompts, so there is nothing for a circuit to recover", rule)  # fmt: skip
    shown = f"{what} is {_with_interval(f, lo, hi, goal)}"
    has_random = random is not None and _finite(*random)
    best = max(random[1], random[2]) if has_random else None
    draws = f"{n_draws} draw{'s' if n_draws != 1 else ''}" if n_draws else "the draws"
    random_words = f"the random circuits' {num(random[0])} (best of {draws}: {num(best)})" if has_random else ""
    tail = f" — {fix}" if fix else ""
    if f < goal:
        notes = ""
        if _finite(hi) and hi >= goal:
            notes += f", though its interval reaches {goal:g}, so more held-out prompts could still tell"
        if has_random and f <= best:
            notes += f", no better than {random_words}"
        return Verdict("not faithful", False, f"{shown}, below {goal:g}{notes}{tail}", rule)
    if not _finite(lo, hi):
        return Verdict("not shown faithful", False, f"{what} is {num(f, goal)} >= {goal:g}, but it has no interval, "
                       "so it is not shown: more held-out prompts give one", rule)  # fmt: skip
    if lo < goal:
        return Verdict("not shown faithful", False, f"{shown} >= {goal:g}, but its interval reaches below {goal:g} "
                       f"(lower end {num(lo, goal)}): more held-out prompts would narrow it", rule)  # fmt: skip
    if has_random and lo <= best:
        return Verdict("not shown faithful", False, f"{shown} >= {goal:g}, but its interval does not clear "
                       f"{random_words}: random circuits of this size do as well, so these edges are not shown to "
                       "matter", rule)  # fmt: skip
    clears = f" and its interval clears {random_words}" if has_random else " (no random circuits measured beside it)"
    return Verdict("faithful", True, f"{shown} >= {goal:g}{clears}", rule)


def first_reaching(points: Iterable[tuple[float, float]], goal: float = GOAL, below: float = 100.0) -> str:
    """Where a faithfulness curve ((percent, f) points) first reaches `goal` below `below` percent,
    in words: what to try when the circuit quoted is not faithful."""
    for p, f in sorted(points):
        if p < below and _finite(f) and f >= goal:
            return (
                f"f first reaches {goal:g} at {p:g}% of edges ({num(f, goal)}); try that size or another scoring method"
            )
    return f"no circuit below {below:g}% of edges reaches {goal:g}; try another scoring method"


def circuit_verdict(report, percent: float, goal: float = GOAL) -> Verdict:
    """The verdict on an edge circuit (a CircuitReport, `interp circuit`'s or one read back) at `percent`
    of the edges: its |score| curve's f and interval there, beside its random circuits where measured."""
    c = report.curve
    f, lo, hi = c.at(percent)
    rnd = getattr(report, "random", None)
    random = tuple(rnd.at(percent)) if rnd is not None and percent in rnd.percents else None
    fix = ""
    if _finite(f) and f < goal:
        later = [(p, v) for p, v in zip(c.percents, c.faithfulness) if p > percent]
        fix = "the edges kept carry little of the task; " + first_reaching(later, goal)
    return faithfulness(f, lo, hi, f"f at {percent:g}% of edges", random, goal, fix,
                        rnd.draws if random is not None else None)  # fmt: skip


def completeness(value: float | None, lo: float | None, hi: float | None, rows: Sequence[dict] = (),
                 limit: float = MAX_INCOMPLETENESS) -> Verdict:  # fmt: skip
    """Whether a circuit of incompleteness `value` [`lo`, `hi`] is complete; `rows` (evaluate's
    completeness table: removed, gap, heads) name the K that left the largest gap."""
    rule = (f"complete when incompleteness (the largest |F(C \\ K) - F(M \\ K)| / |F(M)| over the K tried) and the "
            f"upper end of its 95% interval are <= {limit:g}; not complete when it is above {limit:g}")  # fmt: skip
    if not _finite(value):
        return Verdict("no verdict", False, f"incompleteness is undefined ({value}): F(M) is 0 on these prompts", rule)
    worst = max(rows, key=lambda r: r.get("gap", float("-inf")), default=None)
    k = ""
    if worst is not None:
        heads = " ".join(f"{a}.{b}" for a, b in worst.get("heads", []))
        k = f"K = {worst.get('removed')}" + (f" ({heads})" if heads else "")
    shown = f"incompleteness is {_with_interval(value, lo, hi, limit)}"
    where = f" (the worst of {len(rows)} K tried: {k})" if k else ""
    if value > limit:
        return Verdict("not complete", False, f"{shown}, above {limit:g}{where}: with that K removed the circuit and "
                       "the model part ways, so heads outside the circuit do K's work once K is gone", rule)  # fmt: skip
    if not _finite(lo, hi) or hi > limit:
        return Verdict("not shown complete", False, f"{shown} <= {limit:g}{where}, but " + (
            f"its interval reaches above {limit:g} (upper end {num(hi, limit)}): more held-out prompts would narrow it"
            if _finite(hi) else "it has no interval, so it is not shown"), rule)  # fmt: skip
    return Verdict("complete", True, f"{shown} <= {limit:g}, and so is its interval's upper end{where}", rule)


def head_minimality(row: dict, threshold: float) -> str:
    """Why one head passes or fails minimality, with its numbers."""
    v, lo, hi = row.get("value"), row.get("lo"), row.get("hi")
    if not _finite(lo):
        return f"no interval (value {v})"
    if lo >= threshold:
        return f"passes: lower end {num(lo, threshold)} >= {threshold:g}"
    return f"fails: lower end {num(lo, threshold)} < {threshold:g} (minimality {_with_interval(v, lo, hi, threshold)})"


def minimality(heads: dict[str, dict], threshold: float, noise: dict | None = None) -> Verdict:
    """Whether every head of the circuit is needed: `heads` maps "layer.head" to its minimality (value,
    lo, hi as shares of F(C)); `noise` (mean, max) is what a head outside the circuit moves F(C) by."""
    rule = (f"minimal when every head's minimality (how much removing it moves F(C), as a share of F(C)) has the "
            f"lower end of its 95% interval >= {threshold:g}")  # fmt: skip
    if not heads:
        return Verdict("no verdict", False, "no head was measured", rule)
    failing = sorted(((h, r) for h, r in heads.items() if not (_finite(r.get("lo")) and r["lo"] >= threshold)),
                     key=lambda hr: hr[1].get("lo") if _finite(hr[1].get("lo")) else float("-inf"))  # fmt: skip
    level = ""
    if noise and _finite(noise.get("mean"), noise.get("max")):
        level = f"; a head outside the circuit moves F(C) by {noise['mean']:.3f} on average, {noise['max']:.3f} at most"
    if not failing:
        lowest = min(r["lo"] for r in heads.values())
        return Verdict("minimal", True, f"all {len(heads)} heads' lower ends are >= {threshold:g} (the lowest "
                       f"{num(lowest, threshold)}){level}", rule)  # fmt: skip
    named = ", ".join(
        f"{h} {_with_interval(r.get('value'), r.get('lo'), r.get('hi'), threshold)}" for h, r in failing[:LISTED]
    )
    more = f" and {len(failing) - LISTED} more" if len(failing) > LISTED else ""
    return Verdict("not minimal", False, f"{len(failing)} of {len(heads)} heads have their interval's lower end below "
                   f"{threshold:g}, so removing them is not shown to matter (lowest first, minimality [95% interval] as a share "
                   f"of F(C)): {named}{more}{level}", rule)  # fmt: skip


def ioi_verdicts(circuit: dict, goal: float = GOAL) -> dict[str, Verdict]:
    """The IOI circuit's verdicts from its circuit.json content (interp.circuits.pipeline): faithfulness
    always, completeness and minimality where they were measured."""
    try:
        return _ioi_verdicts(circuit, goal)
    except (TypeError, AttributeError, ValueError, KeyError, IndexError):  # a circuit.json edited by hand
        return {}


def _ioi_verdicts(circuit: dict, goal: float) -> dict[str, Verdict]:
    out = {}
    ci = circuit.get("faithfulness_ci") or (None, None)
    if circuit.get("faithfulness") is not None:
        out["faithfulness"] = faithfulness(circuit["faithfulness"], ci[0], ci[1], "F(C)/F(M)", goal=goal, symbol="F(C)/F(M)",
                                           fix="the heads found carry too little of the model's logit difference; "
                                               "a lower threshold (--threshold) admits more heads")  # fmt: skip
    if circuit.get("incompleteness") is not None:
        ic = circuit.get("incompleteness_ci") or (None, None)
        out["completeness"] = completeness(circuit["incompleteness"], ic[0], ic[1], circuit.get("completeness") or [])
    if circuit.get("minimality"):
        from interp.circuits.evaluate import MIN_MINIMALITY

        out["minimality"] = minimality(circuit["minimality"], circuit.get("min_minimality", MIN_MINIMALITY),
                                       circuit.get("minimality_noise"))  # fmt: skip
    return out
