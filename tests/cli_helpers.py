"""Helpers shared by the CLI tests (tests/ is on sys.path: it holds the root conftest.py)."""

from __future__ import annotations


def error_line(capsys) -> str:
    """The one line the CLI printed for a refusal (after any progress bar), checked to be alone."""
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and err.rstrip().endswith(errors[0]), err
    return errors[0]
