"""Writing figures as HTML that renders offline: plotly.js sits once beside the pages
(plotly.min.js in the same folder) instead of coming from a CDN."""

from __future__ import annotations

from pathlib import Path

import plotly.graph_objects as go

from interp.io import write_text


def write_figure(fig: go.Figure, path: str | Path) -> Path:
    """Write `fig` to `path` (atomically) with plotly.js as a local plotly.min.js next to it."""
    from plotly.offline import get_plotlyjs

    path = Path(path)
    bundle = path.parent / "plotly.min.js"
    if not bundle.is_file():
        write_text(bundle, get_plotlyjs())
    write_text(path, fig.to_html(include_plotlyjs="directory", full_html=True))
    return path
