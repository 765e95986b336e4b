"""Every analysis notebook runs top to bottom headless in fast mode (smaller sizes)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import nbformat
import pytest

ANALYSES = Path(__file__).resolve().parents[1] / "analyses"
spec = importlib.util.spec_from_file_location("run_notebooks", ANALYSES / "run_notebooks.py")
runner = importlib.util.module_from_spec(spec)
spec.loader.exec_module(runner)

NOTEBOOKS = runner.notebooks()


def test_all_four_notebooks_exist_with_outputs():
    names = [p.stem for p in NOTEBOOKS]
    assert names == ["01_induction_heads", "02_ioi_circuit", "03_ffn_memories", "04_phase_change"]
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert all(c.get("outputs") is not None for c in code)
        assert any(c.get("outputs") for c in code), f"{path.name} was committed without the outputs of a full run"
        assert "parameters" in code[0].metadata.get("tags", []), f"{path.name}: first code cell must be the parameter cell"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_in_fast_mode(path, tmp_path):
    copy = tmp_path / path.name
    copy.write_bytes(path.read_bytes())
    runner.execute(copy, fast=True, write=False, timeout=600)
