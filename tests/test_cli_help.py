"""Every `interp` subcommand's --help (the nested actions too) has a one-line description and examples
under "e.g.", and every example parses; `interp --help` names every command and `memories trace`."""

from __future__ import annotations

import argparse
import shlex

import pytest

from interp.cli import build_parser, main


def _commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """(the words after `interp`, the parser) for every subcommand, nested ones included."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*path, name), sub
                yield from _commands(sub, (*path, name))


COMMANDS = list(_commands(build_parser()))


def test_every_command_is_walked():
    names = {" ".join(p) for p, _ in COMMANDS}
    assert {"models", "heads", "ioi", "circuit", "train", "memories trace", "features trace"} <= names
    assert len(names) >= 20


@pytest.mark.parametrize("path", [p for p, _ in COMMANDS], ids=[" ".join(p) for p, _ in COMMANDS])
def test_help_has_a_description_and_examples_that_parse(path, capsys):
    assert main([*path, "--help"]) == 0
    out = capsys.readouterr().out
    parser = dict(COMMANDS)[path]
    first = (parser.description or "").strip().splitlines()
    assert first and len(first[0]) > 20 and first[0] in out, f"interp {' '.join(path)}: no one-line description"
    assert "\ne.g.\n" in out, f"interp {' '.join(path)} --help shows no example"
    examples = [line.strip() for line in out.split("\ne.g.\n", 1)[1].splitlines() if line.strip().startswith("interp ")]
    assert examples, out
    for example in examples:
        words = shlex.split(example)[1:]
        assert tuple(words[: len(path)]) == path, example
        args = build_parser().parse_args(words)  # exits (fails the test) on a flag the command does not take
        assert args.func is not None


def test_top_level_help_lists_every_command_and_memories_trace(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in ("models", "heads", "ioi", "circuit", "memories", "train", "features"):
        assert f"\n    {name}" in out
    assert "interp memories trace" in out and "trace" in out.split("memories", 1)[1].split("\n    train")[0]
