"""Phase changes in training logs (Olsson et al. 2022): the window of steps where a metric jumps,
and each metric's change across that window -- in the run itself and, as controls, in other runs
over the same steps. Pure functions over metrics.jsonl records (`interp.train.read_metrics`)."""

from __future__ import annotations

from itertools import pairwise

INDUCTION_FORMED = 0.2
"""The best induction score a run must reach for its rise to count as a phase change. Below it no
induction head formed and the "jump" is noise: attn-only-1l stays at 0.007-0.009 over 3,000 steps,
while attn-only-2l's formed heads score about 0.47 (benchmarks/RESULTS.md, the H100 runs)."""


def jump_window(steps: list[int], values: list[float], lo: float = 0.1, hi: float = 0.9) -> tuple[int, int] | None:
    """The steps where `values` first covers `lo` and then `hi` of its total change from the first
    value to its extreme (max if it rises, min if it falls): where a phase change happens.
    None when there is no change at all."""
    if len(values) < 2:
        return None
    start = values[0]
    end = max(values) if abs(max(values) - start) >= abs(min(values) - start) else min(values)
    total = end - start
    if total == 0:
        return None
    fractions = [(v - start) / total for v in values]
    first = next(s for s, f in zip(steps, fractions) if f >= lo)
    last = next(s for s, f in zip(steps, fractions) if f >= hi)
    return first, last


def induction_window(records: list[dict], min_score: float = INDUCTION_FORMED,
                     key: str = "induction_score") -> tuple[int, int] | None:
    """The steps of a run's induction jump: `jump_window` of its best induction score over the
    evaluations. None when the score never reaches `min_score` (no induction head formed, so
    there is no phase change to line runs up on) or the log has no evaluations."""
    evals = [r for r in records if key in r]
    if not evals or max(r[key] for r in evals) < min_score:
        return None
    return jump_window([r["step"] for r in evals], [r[key] for r in evals])


def window_rule(lo: float = 0.1, hi: float = 0.9, min_score: float = INDUCTION_FORMED) -> str:
    """The rule `induction_window` follows, in words, for a figure's caption."""
    return (f"the steps where the best induction score (the log's, at each evaluation) first covers {lo:.0%} and then "
            f"{hi:.0%} of its change from its first evaluation to its peak; a run whose score never reaches "
            f"{min_score:g} formed no induction head and gets no window")


def describe_window(records: list[dict], name: str, key: str = "induction_score") -> str:
    """One caption line: where `name`'s phase change is (`induction_window` of its records) and the
    rule that found it, or why there is none."""
    evals = [r for r in records if key in r]
    if not evals:
        return f"No phase change shaded: {name}'s log has no {key} evaluations yet."
    window = induction_window(records, key=key)
    if window is None:
        peak = max(r[key] for r in evals)
        return (f"No phase change shaded: {name}'s best induction score peaks at {peak:.3f}, below "
                f"{INDUCTION_FORMED:g} ({window_rule()}).")
    return f"Shaded: steps {window[0]}-{window[1]}, {name}'s induction phase change: {window_rule()}."


def change_across(records: list[dict], key: str, window: tuple[int, int], span: int) -> tuple[float, float]:
    """(before, after): the mean of `key` over the evaluations in the `span` steps before
    window[0] and in the `span` steps after window[1]. Used to ask whether a metric changes across
    a phase change -- and, on a control run, whether it changes over the same steps."""
    start, end = window

    def mean(lo: int, hi: int, side: str) -> float:
        values = [r[key] for r in records if key in r and lo <= r["step"] <= hi]
        if not values:
            raise ValueError(f"no {key!r} evaluations in the {span} steps {side} the window {window}")
        return sum(values) / len(values)

    return mean(start - span, start - 1, "before"), mean(end + 1, end + span, "after")


def compare_across(runs: dict[str, list[dict]], window: tuple[int, int], span: int | None = None,
                   keys: tuple[str, ...] = ("icl_score", "repeat_bigram_gap")) -> list[dict]:
    """One row per run: each key's mean before and after `window` (usually the induction jump of
    one run, applied to all of them as controls) and the change. `span` defaults to the larger of
    100 steps, the window's length and five eval intervals. Runs without evaluations on both sides
    (or logs without the key) get None."""
    if span is None:
        evals = sorted({r["step"] for records in runs.values() for r in records if "eval_loss" in r})
        interval = min((b - a for a, b in pairwise(evals)), default=0)
        span = max(100, window[1] - window[0], 5 * interval)
    rows = []
    for name, records in runs.items():
        row: dict = {"run": name, "span": span}
        for key in keys:
            try:
                before, after = change_across(records, key, window, span)
                row |= {f"{key} before": before, f"{key} after": after, f"{key} change": after - before}
            except ValueError:
                row |= {f"{key} before": None, f"{key} after": None, f"{key} change": None}
        rows.append(row)
    return rows
