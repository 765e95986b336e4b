"""A real browser against a real server: `streamlit run` on a free port, Debian's Chromium driven
headless by Playwright, over Streamlit's websocket. Types a prompt, checks the predictions
update, and saves a screenshot of every view under test-artifacts/; reloads and finds a saved
result; clicks a node of an edge circuit's graph and reads its edges, then pins it."""

from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from dashboard_helpers import chromium_page, fill, wait_idle

from apps import server

ARTIFACTS = ROOT / "test-artifacts"
pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(scope="module")
def dashboard(tiny_run):
    if not Path(server.CHROMIUM).exists() and not shutil.which("chromium"):
        pytest.fail("Chromium is missing: run `make browser` (apt-get install -y chromium)")
    ARTIFACTS.mkdir(exist_ok=True)
    env = {"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2"),
           "INTERP_RUNS_DIR": str(tiny_run.parent)}  # the training view finds the tiny run on its own
    proc, url = server.start(env=env, log=ARTIFACTS / "dashboard-server.log", timeout=120)
    yield url
    server.stop(proc)


@pytest.fixture(scope="module")
def page(dashboard):
    with chromium_page() as page:
        yield page


def top_prediction(page) -> str:
    return page.get_by_text(re.compile("^Top prediction")).inner_text()


def test_browser_prompt_updates_predictions_and_every_view_renders(page, dashboard, tiny_index, tiny_circuit):
    page.goto(dashboard)
    page.get_by_text(re.compile("^Top prediction")).wait_for()
    wait_idle(page)
    first = top_prediction(page)
    assert "Mary" in first  # SmolLM2 on the default IOI prompt
    assert page.locator('[data-testid="stException"]').count() == 0

    prompt = page.get_by_label("Prompt")
    prompt.fill("The capital of France is the city of")
    prompt.press("Control+Enter")
    page.wait_for_function(
        "old => [...document.querySelectorAll('p')].some(p => p.innerText.startsWith('Top prediction') && p.innerText !== old)",
        arg=first,
    )
    wait_idle(page)
    assert "Paris" in top_prediction(page)
    assert page.locator('[data-testid="stPlotlyChart"]').count() == 3  # predictions, logit lens, a token followed
    page.screenshot(path=str(ARTIFACTS / "dashboard-model.png"))

    for title, slug in [("Attention", "attention"), ("Heads", "heads"), ("IOI circuit", "ioi"),
                        ("FFN memories", "memories"), ("Training runs", "training")]:
        page.locator('[data-testid="stSidebarNav"]').get_by_role("link", name=title).click()
        page.get_by_role("heading", name=title, level=1).wait_for()
        wait_idle(page)
        if slug == "ioi":
            page.get_by_text("open a saved run").click()
            fill(page, "…or a path to circuit.json (or its folder)", str(tiny_circuit))
            page.get_by_text("The prompt through the circuit").wait_for()
        elif slug == "memories":  # bad layers in the Build box (issue 18): a message, no exception
            for layers in ("abc", "40-45"):
                fill(page, re.compile("^Layers"), layers)
                wait_idle(page)
                page.get_by_role("button", name="Build").click()
                page.locator('[data-testid="stAlertContentError"]').filter(has_text="layer").wait_for()
                wait_idle(page)
                assert page.locator('[data-testid="stException"]').count() == 0, layers
            fill(page, "…or an index folder", str(tiny_index))
            page.get_by_text("Trigger examples").wait_for()
        elif slug == "training":
            page.get_by_text(re.compile("^Step .*best induction head")).wait_for()
        wait_idle(page)
        assert page.locator('[data-testid="stException"]').count() == 0, title
        assert page.locator('[data-testid="stAlertContentError"]').count() == 0, title
        page.screenshot(path=str(ARTIFACTS / f"dashboard-{slug}.png"))
        if slug == "attention":  # the prompt carried over; hover shows tokens and weight
            assert page.locator('[data-testid="stPlotlyChart"]').count() == 2
            assert "France" in page.locator('[data-testid="stPlotlyChart"]').first.inner_text()
            box = page.locator('[data-testid="stPlotlyChart"] .nsewdrag').first.bounding_box()
            page.mouse.move(box["x"] + box["width"] * 0.9, box["y"] + box["height"] * 0.95)
            hover = page.locator(".hoverlayer .hovertext").first
            hover.wait_for()
            text = hover.text_content()
            assert "destination" in text and "source" in text and "weight" in text, text
            page.screenshot(path=str(ARTIFACTS / "dashboard-attention-hover.png"))


def test_browser_reload_finds_a_saved_result(page, dashboard, tiny_run, tiny_circuit):
    """Issue 27: a result outlives its browser session. A discovery saved by an earlier session (in the
    runs folder the server reads) is opened after a reload, with no run: discovery with the same
    settings opens it, and the saved-runs picker lists it."""
    from interp.circuits.discover import NAMED_AT_FLOOR, THRESHOLD
    from interp.runs import save_run

    settings = {"n_prompts": 16, "seed": 0, "checks": False, "corruption": "abc", "threshold": THRESHOLD,
                "named_at_floor": NAMED_AT_FLOOR}
    folder = save_run(tiny_run.parent, "ioi", "smollm2-135m", settings,
                      lambda tmp: shutil.copy(tiny_circuit, tmp / "circuit.json"))  # fmt: skip
    try:
        page.goto(dashboard)
        page.reload()
        page.get_by_text(re.compile("^Top prediction")).wait_for()
        page.locator('[data-testid="stSidebarNav"]').get_by_role("link", name="IOI circuit").click()
        page.get_by_text(re.compile("^Opened .*" + re.escape(folder.name))).wait_for()  # the default settings' saved run
        page.get_by_role("button", name="Run discovery again").wait_for()
        page.get_by_text("The prompt through the circuit").wait_for()
        wait_idle(page)
        page.get_by_text("open a saved run").click()
        page.get_by_test_id("stMain").get_by_test_id("stSelectbox").filter(has_text="Saved discovery").click()
        page.get_by_role("option", name=re.compile(re.escape(folder.name) + ": IOI discovery")).click()  # listed
        wait_idle(page)
        page.get_by_text(re.compile("^Opened .*made by the dashboard")).wait_for()
        wait_idle(page)
        assert page.locator('[data-testid="stException"]').count() == 0
        assert page.locator('[data-testid="stAlertContentError"]').count() == 0
        page.screenshot(path=str(ARTIFACTS / "dashboard-saved-run.png"))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def smol_edges(tmp_path_factory) -> Path:
    """An edges.json for SmolLM2-135M's graph as `interp circuit --out` writes it, with made-up scores
    (seeded, heavy-tailed) and curve: the graph view's input without minutes of EAP-IG."""
    import torch

    from interp.circuits.faithfulness import MIB_PERCENTS, RandomBaseline
    from interp.circuits.io import circuit_json, write_edges
    from interp.circuits.types import Curve, EdgeScores, Graph
    from interp.circuits.ungroup import GRAPH_HELP

    g = Graph(n_layers=30, n_heads=9, n_kv=3, has_mlp=True)  # SmolLM2-135M's
    gen = torch.Generator().manual_seed(0)
    scores = torch.randn(g.n_edges, generator=gen) * torch.rand(g.n_edges, generator=gen) ** 6
    p = [float(x) for x in MIB_PERCENTS]
    f = [min(1.0, 0.2 + x / 20) for x in p]
    curve = Curve(p, [int(x / 100 * g.n_edges) for x in p], [int(x / 100 * g.n_edges) for x in p], f,
                  [x - 0.05 for x in f], [x + 0.05 for x in f], 0.8, 0.2, (0.7, 0.9), (0.1, 0.3), 3.0, -0.5,
                  [-0.5 + 3.5 * x for x in f], "abs", True, "counterfactual", 16)  # fmt: skip
    s = EdgeScores(g, scores, "eap-ig", "ioi", "logit-diff", 16, 3.0, -0.5, steps=5)
    rand = RandomBaseline(p, [1, 2, 3], [[int(x / 100 * g.n_edges) for x in p]] * 3,
                          [[min(1.0, x / 100 + d / 100) for x in p] for d in range(3)], [0.27, 0.28, 0.29],
                          [0.72, 0.71, 0.70], 3.0, -0.5, True, "counterfactual", 16)  # fmt: skip
    graph = {"name": "grouped", "about": GRAPH_HELP["grouped"], "n_nodes": g.n_nodes, "n_edges": g.n_edges}
    folder = tmp_path_factory.mktemp("edges")
    write_edges(folder, circuit_json(s, {"abs": curve, "signed": curve}, [], {"model": "smollm2-135m", "seed": 0,
                                                                               "graph": graph}, rand))  # fmt: skip
    return folder


NODE_XY = """([name, title]) => {
    const gd = [...document.querySelectorAll('.js-plotly-plot')].find(d => (d.layout.title.text || '').includes(title));
    const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis, box = gd.getBoundingClientRect();
    for (const t of gd._fullData) {
        const i = t.mode === 'markers+text' && t.customdata ? [...t.customdata].indexOf(name) : -1;
        if (i >= 0) return [box.left + xa._offset + xa.l2p(t.x[i]), box.top + ya._offset + ya.l2p(t.y[i])];
    }
    return null;
}"""


def test_browser_circuit_graph_click_shows_a_nodes_edges(page, dashboard, smol_edges):
    """Issue 27: the Circuit view's graph is explorable like circuit-tracer's: a click on a node shows
    its incoming and outgoing edges with their scores; pinning keeps the edges around it."""
    page.goto(dashboard)
    page.get_by_text(re.compile("^Top prediction")).wait_for()
    page.locator('[data-testid="stSidebarNav"]').get_by_role("link", name="Circuit", exact=True).click()
    page.get_by_role("heading", name="Circuit", level=1, exact=True).wait_for()
    wait_idle(page)
    page.get_by_text("open a saved run").click()
    fill(page, "…or a path to edges.json (or its folder)", str(smol_edges))
    page.get_by_text(re.compile("^Opened ")).wait_for()
    wait_idle(page)
    page.locator(".js-plotly-plot").filter(has_text="Circuit at 5% of edges").wait_for()
    assert "f = 0.45" in page.locator(".js-plotly-plot").filter(has_text="Circuit at 5% of edges").inner_text()
    # issue 29: the graph each figure is on, and MIB's Random row beside the curve and in the tiles
    curve = page.locator(".js-plotly-plot").filter(has_text="Faithfulness on 16 held-out prompts")
    assert "grouped graph, 70,651 edges" in curve.inner_text() and "random circuits, 3 draws" in curve.inner_text()
    assert page.get_by_text("Edges in the graph (grouped)").count() == 1
    tile = page.get_by_test_id("stMetric").filter(has_text="Random: CPR")
    assert tile.count() == 1 and "0.28" in tile.inner_text()
    xy = page.evaluate(NODE_XY, ["logits", "Circuit at"])
    assert xy, "no logits node drawn"
    page.mouse.click(*xy)
    page.get_by_text(re.compile(r"^logits: \d+ edges in \(scores sum to")).wait_for()
    wait_idle(page)
    table = page.get_by_test_id("stDataFrame").filter(has_text="direction")
    table.first.wait_for(state="attached")  # the table draws after the line above it
    assert table.count() == 1 and "logits" in table.text_content()  # the grid is a canvas: its cells are in the DOM, hidden
    assert page.locator('[data-testid="stException"]').count() == 0
    page.screenshot(path=str(ARTIFACTS / "dashboard-circuit-node.png"))
    page.get_by_test_id("stMultiSelect").filter(has_text="Pin nodes").click()
    page.keyboard.type("logits")  # the list of nodes is long: filter it
    page.get_by_role("option", name="logits", exact=True).click()
    page.keyboard.press("Escape")
    page.locator(".js-plotly-plot").filter(has_text="pinned: logits").wait_for()
    wait_idle(page)
    assert page.locator('[data-testid="stException"]').count() == 0
    page.screenshot(path=str(ARTIFACTS / "dashboard-circuit-pinned.png"))
