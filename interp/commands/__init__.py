"""Subcommands of the `interp` CLI, one module each (see interp.cli)."""

from __future__ import annotations

import argparse


def helped(description: str, *examples: str) -> dict:
    """add_parser's keyword arguments for a subcommand's --help: its one-line description, and the
    examples under "e.g." (each a whole command line, checked to parse by the tests)."""
    return {"description": description, "epilog": "e.g.\n" + "\n".join(f"  {e}" for e in examples),
            "formatter_class": argparse.RawDescriptionHelpFormatter}  # fmt: skip


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
