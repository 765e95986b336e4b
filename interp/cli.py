"""The `interp` command. Each subcommand lives in interp/commands/<name>.py and exposes
`add_parser(subparsers)` (which sets `func`) ; `main(argv) -> int` is what tests call.

Exit codes: 0 success, 2 bad input (a one-line message on stderr, never a traceback)."""

from __future__ import annotations

import argparse
import importlib
import sys

from interp.errors import WorkbenchError

COMMANDS = ["models", "heads", "ioi", "circuit", "memories", "train", "features", "graph"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="interp", description="Mechanistic-interpretability workbench", formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="e.g.\n  interp models\n  interp heads --model smollm2-135m --validate\n"
               "  interp circuit --model smollm2-135m --task ioi --out runs/ioi-edges\n"
               "  interp memories trace --model smollm2-135m --prompt 'The capital of France is'\n\n"
               "`interp COMMAND --help` describes each command, with examples.")  # fmt: skip
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"interp.commands.{name}").add_parser(sub)
    return parser


def entry() -> int:
    """The `interp` command: the C library's allocator set for array work (interp.allocator), then main()."""
    from interp.allocator import keep_freed_memory

    keep_freed_memory()
    return main()


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse already printed its usage message
        return int(e.code or 0)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except WorkbenchError as e:
        _close_progress_bars()
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        _close_progress_bars()
        print("interrupted", file=sys.stderr)
        return 130


def _close_progress_bars() -> None:
    """Close the bars a failed command left open, so its message starts a line of its own."""
    try:
        from tqdm import tqdm
    except ImportError:
        return
    for bar in list(getattr(tqdm, "_instances", ())):
        bar.close()


if __name__ == "__main__":
    sys.exit(entry())
