"""`interp memories` (not implemented yet)."""

from __future__ import annotations

from interp.errors import WorkbenchError


def add_parser(sub) -> None:
    p = sub.add_parser("memories", help="(coming soon)")
    p.set_defaults(func=run)


def run(args) -> int:
    raise WorkbenchError("'interp memories' is not implemented yet")
