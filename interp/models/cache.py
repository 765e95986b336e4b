"""The workbench's cache folder (converted GGUF models, tokenizers, tokenized corpora).

`INTERP_CACHE` overrides the location; otherwise `$XDG_CACHE_HOME/interp` or `~/.cache/interp`.
Everything in it is written with `interp.io.write_dir` / `write_with` (atomic, racing writers
keep the first finished folder).
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    root = os.environ.get("INTERP_CACHE")
    if root:
        return Path(root).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "interp"
