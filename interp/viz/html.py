"""Writing figures as HTML that renders offline: plotly.js sits once beside the pages
(plotly.min.js in the same folder) instead of coming from a CDN."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import plotly.graph_objects as go


def _write_text_atomically(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def write_figure(fig: go.Figure, path: str | Path) -> Path:
    """Write `fig` to `path` (atomically) with plotly.js as a local plotly.min.js next to it."""
    from plotly.offline import get_plotlyjs

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    bundle = path.parent / "plotly.min.js"
    if not bundle.is_file():
        _write_text_atomically(bundle, get_plotlyjs())
    _write_text_atomically(path, fig.to_html(include_plotlyjs="directory", full_html=True))
    return path
