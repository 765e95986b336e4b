"""Every analysis notebook runs top to bottom headless in fast mode (smaller sizes), and its
figures are plotly JSON + one PNG each (interp.viz.notebook), never embedded plotly.js: each
committed notebook stays under 1 MB."""

from __future__ import annotations

import base64
import importlib.util
from pathlib import Path

import nbformat
import plotly.graph_objects as go
import plotly.io as pio
import pytest
from nbformat.v4 import new_code_cell, new_notebook, new_output

from interp.viz.notebook import JSON_MIME, PNG_MIME, JsonPngRenderer, setup

ANALYSES = Path(__file__).resolve().parents[1] / "analyses"
spec = importlib.util.spec_from_file_location("run_notebooks", ANALYSES / "run_notebooks.py")
runner = importlib.util.module_from_spec(spec)
spec.loader.exec_module(runner)

NOTEBOOKS = runner.notebooks()
MAX_BYTES = 1_000_000


def test_all_notebooks_exist_with_outputs():
    names = [p.stem for p in NOTEBOOKS]
    assert names == ["01_induction_heads", "02_ioi_circuit", "03_ffn_memories", "04_phase_change", "05_circuits",
                     "06_features"]
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert all(c.get("outputs") is not None for c in code)
        assert any(c.get("outputs") for c in code), f"{path.name} was committed without the outputs of a full run"
        assert "parameters" in code[0].metadata.get("tags", []), f"{path.name}: first code cell must be the parameter cell"


def figure_outputs(nb) -> int:
    return sum(JSON_MIME in o.get("data", {}) for c in nb.cells if c.cell_type == "code" for o in c.outputs)


def assert_figure_format(nb, name: str) -> None:
    problems = runner.figure_problems(nb)
    assert not problems, f"{name}: figures not as plotly JSON + PNG:\n  " + "\n  ".join(problems)
    assert figure_outputs(nb), f"{name} shows no figure"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_committed_notebook_is_small_with_json_and_png_figures(path):
    assert path.stat().st_size < MAX_BYTES, f"{path.name} is {path.stat().st_size:,} bytes (limit {MAX_BYTES:,})"
    assert_figure_format(nbformat.read(path, as_version=4), path.name)


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_in_fast_mode(path, tmp_path):
    copy = tmp_path / path.name
    copy.write_bytes(path.read_bytes())
    _, nb = runner.execute(copy, fast=True, write=False, timeout=600)
    assert_figure_format(nb, f"{path.name} (executed in fast mode)")
    assert len(nbformat.writes(nb)) < MAX_BYTES


def one_output_notebook(data: dict):
    return new_notebook(cells=[new_code_cell(outputs=[new_output("display_data", data=data)])])


def test_setup_makes_the_json_png_renderer_the_default(monkeypatch):
    monkeypatch.setattr(pio.renderers, "default", pio.renderers.default)  # restored afterwards
    setup()
    assert isinstance(pio.renderers[pio.renderers.default], JsonPngRenderer)


@pytest.mark.browser
def test_renderer_writes_json_and_a_png_of_the_figure():
    # "\x04" is a token SmolLM2's attention figures label: XML forbids it, kaleido's SVG step failed on it
    fig = go.Figure(go.Heatmap(z=[[1, 2], [3, 4]]), layout={"width": 300, "height": 200})
    fig.update_xaxes(tickvals=[0, 1], ticktext=["a", "\x04"])
    bundle = JsonPngRenderer().to_mimebundle(fig.to_dict())
    assert set(bundle) == {JSON_MIME, PNG_MIME}
    assert bundle[JSON_MIME]["layout"]["xaxis"]["ticktext"] == ["a", "\x04"]  # the JSON keeps the figure as it is
    png = base64.b64decode(bundle[PNG_MIME])
    assert png[16:24] == (300).to_bytes(4, "big") + (200).to_bytes(4, "big")  # IHDR: the figure's size
    assert runner.figure_problems(one_output_notebook(bundle)) == []


def test_without_a_browser_the_figure_is_json_only_and_the_check_fails(monkeypatch, tmp_path):
    monkeypatch.setenv("BROWSER_PATH", str(tmp_path / "no-chromium"))
    with pytest.warns(UserWarning, match="without its PNG"):
        bundle = JsonPngRenderer().to_mimebundle(go.Figure(go.Bar(y=[1, 2])).to_dict())
    assert set(bundle) == {JSON_MIME}
    problems = runner.figure_problems(one_output_notebook(bundle))
    assert len(problems) == 1 and "plotly JSON without a PNG" in problems[0]


def test_the_check_finds_embedded_plotly_js():
    fig = go.Figure(go.Bar(y=[1, 2]))
    for html in (fig.to_html(include_plotlyjs=False, full_html=False), fig.to_html(include_plotlyjs="cdn")):
        problems = runner.figure_problems(one_output_notebook({"text/html": html, "text/plain": "Figure"}))
        assert len(problems) == 1 and "plotly.js embedded" in problems[0]
    table = "<table><tr><td>Plotly is a library</td></tr></table>"
    assert runner.figure_problems(one_output_notebook({"text/html": table})) == []
