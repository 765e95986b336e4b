"""One-off: bring notebooks saved with plotly.js embedded (the `notebook` renderer, before
interp.viz.notebook) to the current figure format without re-running them.

    python analyses/convert_figures.py            # all four, in place
    python analyses/convert_figures.py 01_induction_heads

Each HTML output that draws a figure (`Plotly.newPlot(id, data, layout, config)`) becomes plotly
JSON + a PNG rendered from the figure recovered from that call; the output that only loaded the
plotly.js bundle is dropped; every other output stays as it is. The recovered figure must equal
the plotly JSON saved beside the HTML (same traces, same data, same layout), and the written JSON
must equal the recovered figure, or nothing is written.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys

import numpy as np
from run_notebooks import embeds_plotly_js, figure_problems, notebooks  # also puts this checkout first on sys.path

from interp.viz.notebook import JSON_MIME, mimebundle

_json = json.JSONDecoder()


def _skip(text: str, i: int, sep: str = "") -> int:
    while text[i].isspace():
        i += 1
    if sep:
        if text[i] != sep:
            raise ValueError(f"expected {sep!r} at {i}, found {text[i:i + 20]!r}")
        i += 1
        while text[i].isspace():
            i += 1
    return i


def recover_figure(html: str) -> dict | None:
    """The {data, layout} passed to Plotly.newPlot in an HTML output (None where it has no call)."""
    start = html.find("Plotly.newPlot(")
    if start < 0:
        return None
    i = _skip(html, start + len("Plotly.newPlot("))
    args = []
    for sep in ("", ",", ",", ","):  # id, data, layout, config
        value, i = _json.raw_decode(html, _skip(html, i, sep))
        args.append(value)
    if html.find("Plotly.newPlot(", i) >= 0:
        raise ValueError("more than one Plotly.newPlot call in one output")
    _, data, layout, _config = args
    return {"data": data, "layout": layout}


def _plain(value):
    """Typed arrays ({dtype, bdata, shape}) decoded to lists, so two encodings of one figure compare equal."""
    if isinstance(value, dict):
        if "bdata" in value and "dtype" in value:
            array = np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"])
            if value.get("shape"):
                array = array.reshape([int(n) for n in str(value["shape"]).split(",")])
            return array.tolist()
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def same_figure(a: dict, b: dict) -> bool:
    plain = [json.dumps(_plain({k: f.get(k) for k in ("data", "layout")}), sort_keys=True) for f in (a, b)]
    return plain[0] == plain[1]


def convert(nb) -> tuple[int, int]:
    """Convert `nb` in place; returns (figures converted, plotly.js outputs dropped)."""
    figures = dropped = 0
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        kept = []
        for out in cell.outputs:
            data = out.get("data", {})
            html = data.get("text/html", "")
            if not embeds_plotly_js(html):
                kept.append(out)
                continue
            figure = recover_figure(html)
            if figure is None:
                if set(data) != {"text/html"}:
                    raise ValueError(f"cell {i}: plotly.js output with more than HTML: {sorted(data)}")
                dropped += 1
                continue
            if JSON_MIME in data and not same_figure(figure, data[JSON_MIME]):
                raise ValueError(f"cell {i}: the figure in the HTML differs from the plotly JSON beside it")
            bundle = mimebundle(json.loads(json.dumps(figure)), require_png=True)
            if not same_figure(bundle[JSON_MIME], figure):
                raise ValueError(f"cell {i}: the plotly JSON written differs from the recovered figure")
            out.data = bundle
            kept.append(out)
            figures += 1
        cell.outputs = kept
    return figures, dropped


def main(argv: list[str] | None = None) -> int:
    import nbformat

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("names", nargs="*")
    args = ap.parse_args(argv)
    for path in notebooks(args.names):
        before = path.stat().st_size
        nb = nbformat.read(path, as_version=4)
        figures, dropped = convert(nb)
        if problems := figure_problems(nb):
            raise SystemExit(f"{path.name}: still not in the figure format, not written:\n  " + "\n  ".join(problems))
        nbformat.write(nb, path)
        print(f"{path.name}: {figures} figures as JSON + PNG, {dropped} plotly.js outputs dropped, "
              f"{before:,} -> {path.stat().st_size:,} bytes", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
