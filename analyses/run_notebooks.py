"""Execute the analysis notebooks top to bottom, headless.

    python analyses/run_notebooks.py            # full mode, outputs written back into the notebooks
    python analyses/run_notebooks.py --fast     # fast mode (INTERP_NOTEBOOK_FAST=1), outputs discarded
    python analyses/run_notebooks.py 02_ioi_circuit.ipynb   # just one

The kernel imports `interp` from this checkout (its root goes first on the kernel's PYTHONPATH).
Figures are saved as plotly JSON + PNG (interp.viz.notebook); a run whose outputs break that
format (a figure without its PNG because no browser could be started, embedded plotly.js) still
saves them but says so and exits 1.
"""

from __future__ import annotations

import argparse
import base64
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:  # run as a script from a checkout without an installed interp
    sys.path.insert(0, str(ROOT))

from interp.viz.notebook import JSON_MIME, PNG_MIME

# Signs of plotly.js in an HTML output: a figure drawn by it, the bundle itself, or a CDN load.
PLOTLY_JS_SIGNS = ("Plotly.newPlot(", "window.PlotlyConfig", "* plotly.js v", "cdn.plot.ly")


def notebooks(names: list[str] | None = None) -> list[Path]:
    found = sorted(HERE.glob("[0-9][0-9]_*.ipynb"))
    if names:
        found = [p for p in found if p.name in names or p.stem in names]
    return found


def kernel_env(fast: bool) -> dict[str, str]:
    env = dict(os.environ, INTERP_NOTEBOOK_FAST="1" if fast else "0")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return env


def execute(path: Path, fast: bool, write: bool, timeout: int = 1800):
    """Run `path` in a fresh kernel; returns (seconds, the executed notebook), writing it back if `write`."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(HERE)}})
    client.execute(env=kernel_env(fast))
    elapsed = time.perf_counter() - start
    if write:
        nbformat.write(nb, path)
    return elapsed, nb


def embeds_plotly_js(html: str) -> bool:
    return any(sign in html for sign in PLOTLY_JS_SIGNS)


def _is_png(b64: str) -> bool:
    try:
        return base64.b64decode(b64, validate=True).startswith(b"\x89PNG\r\n\x1a\n")
    except ValueError:
        return False


def figure_problems(nb) -> list[str]:
    """What breaks the figure format in a notebook's outputs: HTML with plotly.js, plotly JSON
    without a PNG beside it (with the cell's warnings, which say why), a PNG that is not one."""
    problems = []
    for i, cell in enumerate(nb.cells):
        outputs = cell.get("outputs", []) if cell.cell_type == "code" else []
        stderr = "".join(o.get("text", "") for o in outputs if o.output_type == "stream" and o.name == "stderr")
        for j, out in enumerate(outputs):
            data = out.get("data", {})
            where = f"cell {i} output {j}"
            if embeds_plotly_js(data.get("text/html", "")):
                problems.append(f"{where}: text/html with plotly.js embedded ({len(data['text/html']):,} chars)")
            if JSON_MIME in data and PNG_MIME not in data:
                problems.append(f"{where}: plotly JSON without a PNG beside it" + (f"; the cell said: {stderr.strip()}"
                                                                                    if stderr.strip() else ""))
            if PNG_MIME in data and not _is_png(data[PNG_MIME]):
                problems.append(f"{where}: image/png that is not a base64 PNG")
    return problems


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("names", nargs="*")
    ap.add_argument("--fast", action="store_true")
    args = ap.parse_args(argv)
    status = 0
    for path in notebooks(args.names):
        seconds, nb = execute(path, fast=args.fast, write=not args.fast)
        print(f"{path.name}: {seconds:.0f} s ({'fast' if args.fast else 'full, outputs saved'})", flush=True)
        for problem in figure_problems(nb):
            print(f"  {path.name}: {problem}", file=sys.stderr, flush=True)
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
