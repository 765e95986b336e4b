"""`interp train` (not implemented yet)."""

from __future__ import annotations

from interp.errors import WorkbenchError


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="(coming soon)")
    p.set_defaults(func=run)


def run(args) -> int:
    raise WorkbenchError("'interp train' is not implemented yet")
