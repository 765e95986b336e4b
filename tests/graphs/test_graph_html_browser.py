"""graph.html in headless Chromium, offline: the page draws, picking or clicking a node lists its edges
with their weights (a supernode's summed), pinning keeps only its edges, hiding drops a node."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
from test_graph_html import HAND

from interp.graphs.view import graph_view
from interp.viz.graph_html import write_graph_html

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.browser, pytest.mark.slow]

EDGES = """() => document.getElementById('graph').data.filter(t => t.meta === 'edges')
                 .reduce((n, t) => n + t.x.filter(v => v === null).length, 0)"""
NODES = """() => document.getElementById('graph').data.filter(t => t.meta === 'nodes').flatMap(t => [...t.customdata])"""


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    sys.path.insert(0, str(ROOT))
    from playwright.sync_api import sync_playwright

    from apps import server

    if not Path(server.CHROMIUM).exists() and not shutil.which("chromium"):
        pytest.skip("no Chromium")
    path = write_graph_html(graph_view(HAND, {"S": ["F0.1@0", "F0.2@1"]}), tmp_path_factory.mktemp("html") / "graph.html")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=server.CHROMIUM, args=server.CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.route("**/*", lambda route: route.abort() if not route.request.url.startswith("file:") else route.continue_())
        page.goto(path.as_uri())
        page.wait_for_function("() => window.graphExplorer && window.graphExplorer.state", timeout=60_000)
        yield page
        browser.close()


def test_pick_pin_hide_and_click(page):
    assert page.evaluate(EDGES) == 6  # the hand graph's edges, S's summed
    page.select_option("#pick", "S")
    text = page.inner_text("#node")
    assert "Incoming: 2 edges (sum +0.375)" in text and "Outgoing: 2 edges (sum +3.25)" in text
    assert "+2.5" in text and "sum of 2 edges" in text and "F0.1@0" in text  # S -> logit0, and its members
    page.click("#pin-node")
    assert page.evaluate(EDGES) == 4 and page.inner_text("#pinned") == "S"
    assert sorted(page.evaluate(NODES)) == ["F1.3@1", "S", "logit0", "tok@0", "tok@1"]
    page.click("#clear-pins")
    page.evaluate("() => document.getElementById('graph').emit('plotly_click', {points: [{customdata: 'F1.3@1'}]})")
    assert page.inner_text("#node h2") == "F1.3@1" and "Incoming: 2 edges" in page.inner_text("#node")
    page.click("#hide-node")
    assert page.evaluate(EDGES) == 3 and "F1.3@1" not in page.evaluate(NODES)
    page.click("#show-hidden")
    assert page.evaluate(EDGES) == 6
