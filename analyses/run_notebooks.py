"""Execute the analysis notebooks top to bottom, headless.

    python analyses/run_notebooks.py            # full mode, outputs written back into the notebooks
    python analyses/run_notebooks.py --fast     # fast mode (INTERP_NOTEBOOK_FAST=1), outputs discarded
    python analyses/run_notebooks.py 02_ioi_circuit.ipynb   # just one
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def notebooks(names: list[str] | None = None) -> list[Path]:
    found = sorted(HERE.glob("[0-9][0-9]_*.ipynb"))
    if names:
        found = [p for p in found if p.name in names or p.stem in names]
    return found


def execute(path: Path, fast: bool, write: bool, timeout: int = 1800) -> float:
    import nbformat
    from nbclient import NotebookClient

    os.environ["INTERP_NOTEBOOK_FAST"] = "1" if fast else "0"
    nb = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(HERE)}}).execute()
    elapsed = time.perf_counter() - start
    if write:
        nbformat.write(nb, path)
    return elapsed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("names", nargs="*")
    ap.add_argument("--fast", action="store_true")
    args = ap.parse_args(argv)
    for path in notebooks(args.names):
        seconds = execute(path, fast=args.fast, write=not args.fast)
        print(f"{path.name}: {seconds:.0f} s ({'fast' if args.fast else 'full, outputs saved'})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
