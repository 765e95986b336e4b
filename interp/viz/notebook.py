"""How the analysis notebooks show figures: each `fig.show()` writes one output holding the
figure as plotly JSON (JupyterLab draws it, offline, with its own plotly.js) and a PNG of the same
figure (what a plain viewer such as GitHub's shows). No plotly.js is embedded in the notebook.

The PNG comes from kaleido, which drives a local Chrome/Chromium (Debian's /usr/bin/chromium,
found on PATH or at its usual path; BROWSER_PATH overrides) with the plotly.js of the installed
plotly package and MathJax switched off, so rendering fetches nothing. Where no browser can be
started the figure is still shown as JSON alone, with a warning; tests/test_notebooks.py fails
on such an output.
"""

from __future__ import annotations

import base64
import io
import re
import warnings

import plotly.io as pio
from plotly.io._base_renderers import MimetypeRenderer, PlotlyRenderer

JSON_MIME = "application/vnd.plotly.v1+json"
PNG_MIME = "image/png"
RENDERER = "interp_notebook"  # plotly json + png ("+" would split it into two renderers)
# Layout pixels where a figure sets no size (about a notebook cell's width; plotly's default
# height), at scale 1, stored with a 256-colour palette: a figure's PNG is some 5-30 kB.
WIDTH, HEIGHT, SCALE = 900, 500, 1.0


def _size(fig_dict: dict, key: str, default: int) -> int:
    layout = fig_dict.get("layout", {})
    return layout.get(key) or layout.get("template", {}).get("layout", {}).get(key) or default


# Characters XML 1.0 forbids: kaleido turns plotly.js's SVG into the PNG, so one of them in a label
# (a tokenizer's "\x04" token) fails the render. Drawn as its Unicode control picture instead.
_XML_ILLEGAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f]")


def _xml_safe(value):
    if isinstance(value, str):
        return _XML_ILLEGAL.sub(lambda m: chr(0x2400 + ord(m.group())), value)
    if isinstance(value, dict):
        return {k: _xml_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_xml_safe(v) for v in value]
    return value


def figure_png(fig_dict: dict, scale: float = SCALE) -> bytes:
    """The PNG of a figure dict (or go.Figure), rendered by kaleido in a local headless Chromium.
    Raises when kaleido or a browser is missing."""
    import kaleido

    if not isinstance(fig_dict, dict):
        fig_dict = fig_dict.to_dict()
    opts = {"format": "png", "width": _size(fig_dict, "width", WIDTH), "height": _size(fig_dict, "height", HEIGHT),
            "scale": scale}
    return _compact(kaleido.calc_fig_sync(_xml_safe(fig_dict), opts=opts, kopts={"mathjax": False}))


def _compact(png: bytes) -> bytes:
    """kaleido's RGBA PNG on white, in an adaptive 256-colour palette (no dithering; what changes
    are the shades of anti-aliased edges and smooth colour scales), deflated harder: a third of
    kaleido's size or less. The exact figure is the JSON beside it."""
    from PIL import Image

    rgba = Image.open(io.BytesIO(png)).convert("RGBA")
    image = Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba).convert("RGB")
    out = io.BytesIO()
    image.quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(out, "PNG", optimize=True)
    return out.getvalue()


def mimebundle(fig_dict: dict, scale: float = SCALE, require_png: bool = False) -> dict:
    """The output data of one figure: plotly JSON (as plotly's `plotly_mimetype` renderer writes
    it) and its base64 PNG. Without a PNG engine the bundle holds the JSON alone and a warning is
    issued, or, with `require_png`, the error is raised."""
    bundle = PlotlyRenderer().to_mimebundle(fig_dict)
    try:
        png = figure_png(bundle[JSON_MIME], scale)
    except Exception as e:  # no kaleido, no browser, a browser that died: the JSON still shows
        if require_png:
            raise
        warnings.warn(f"figure shown without its PNG (plotly JSON only; the PNG needs kaleido and Chromium: "
                      f"`make browser`, or BROWSER_PATH): {type(e).__name__}: {e}", stacklevel=3)
        return bundle
    bundle[PNG_MIME] = base64.b64encode(png).decode("ascii")
    return bundle


class JsonPngRenderer(MimetypeRenderer):
    """plotly's renderers framework entry for `mimebundle`: JSON + PNG in one output."""

    def __init__(self, scale: float = SCALE):
        self.scale = scale

    def to_mimebundle(self, fig_dict: dict) -> dict:
        return mimebundle(fig_dict, self.scale)


def setup(scale: float = SCALE) -> None:
    """Make `fig.show()` write plotly JSON + PNG (call once, in a notebook's import cell)."""
    pio.renderers[RENDERER] = JsonPngRenderer(scale)
    pio.renderers.default = RENDERER
