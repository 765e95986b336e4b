"""Subcommands of the `interp` CLI, one module each (see interp.cli)."""

from __future__ import annotations


def step_bar(desc: str):
    """(a tqdm bar, the `progress(done, total, message)` callback that drives it): one bar whose
    description follows the library's current stage."""
    from tqdm import tqdm

    bar = tqdm(total=1, desc=desc, unit="step")

    def progress(done: int, total: int, message: str) -> None:
        bar.total = total
        bar.n = done
        bar.set_description(message)
        bar.refresh()

    return bar, progress
