"""Issue 27 in a real browser: a click on a heatmap cell that is no reported head's marker opens that
head in the Heads view, with its ablation on the prompt and its OV and QK top tokens (a dashboard
served on the tiny Llama, Debian's headless Chromium driven by Playwright)."""

from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from dashboard_helpers import chromium_page, wait_idle

from apps import server

ARTIFACTS = ROOT / "test-artifacts"
pytestmark = [pytest.mark.browser, pytest.mark.slow]

CELL_XY = """([kind, layer, head]) => {
    const gd = [...document.querySelectorAll('.js-plotly-plot')].find(d => ((d.layout.title && d.layout.title.text) || '').includes('Head pattern scores'));
    const t = gd._fullData.find(t => t.name === kind + ' cells');
    const xa = gd._fullLayout[t.xaxis.replace('x', 'xaxis')], ya = gd._fullLayout[t.yaxis.replace('y', 'yaxis')];
    const box = gd.getBoundingClientRect();
    return [box.left + xa._offset + xa.l2p(head), box.top + ya._offset + ya.l2p(layer)];
}"""
MARKED = """(kind) => {
    const gd = [...document.querySelectorAll('.js-plotly-plot')].find(d => ((d.layout.title && d.layout.title.text) || '').includes('Head pattern scores'));
    const cells = gd._fullData.find(t => t.name === kind + ' cells');
    return gd._fullData.filter(t => t.xaxis === cells.xaxis && t.type === 'scatter' && t !== cells && t.name !== 'picked head')
                       .flatMap(t => [...t.x].map((x, i) => [t.y[i], x]));
}"""


@pytest.fixture(scope="module")
def served(tiny_llama_dir, tmp_path_factory):
    if not Path(server.CHROMIUM).exists() and not shutil.which("chromium"):
        pytest.fail("Chromium is missing: run `make browser` (apt-get install -y chromium)")
    ARTIFACTS.mkdir(exist_ok=True)
    env = {"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2"),
           "INTERP_DEFAULT_MODEL": str(tiny_llama_dir), "INTERP_RUNS_DIR": str(tmp_path_factory.mktemp("runs"))}
    proc, url = server.start(env=env, log=ARTIFACTS / "dashboard-head-page-server.log", timeout=120)
    yield url
    server.stop(proc)


def test_browser_click_on_any_heatmap_cell_opens_the_head_page(served):
    with chromium_page(height=3000) as page:
        page.goto(served)
        page.get_by_text(re.compile("^Top prediction")).wait_for()
        page.locator('[data-testid="stSidebarNav"]').get_by_role("link", name="Heads").click()
        page.get_by_role("heading", name="Heads", level=1).wait_for()
        page.get_by_text(re.compile(r"pattern scores: previous-token")).wait_for()
        wait_idle(page)
        first = page.get_by_text(re.compile(r"^L\dH\d pattern scores")).inner_text()
        marked = {tuple(c) for c in page.evaluate(MARKED, "duplicate-token")}  # the reported heads' markers
        assert len(marked) == 3
        layer, head = next((la, h) for la in (1, 0) for h in range(4) if f"L{la}H{h}" not in first and (la, h) not in marked)
        page.mouse.click(*page.evaluate(CELL_XY, ["duplicate-token", layer, head]))
        page.get_by_text(re.compile(rf"^L{layer}H{head} pattern scores")).wait_for()
        wait_idle(page)
        for part in (f"Ablating L{layer}H{head} on the prompt", "OV circuit", "QK circuit"):
            page.get_by_text(part).first.wait_for()
        boxes = [page.get_by_role("spinbutton", name=n, exact=True).input_value() for n in ("Layer", "Head")]
        assert boxes == [str(layer), str(head)]
        assert page.locator('[data-testid="stException"]').count() == 0
        assert page.locator('[data-testid="stAlertContentError"]').count() == 0
        page.screenshot(path=str(ARTIFACTS / "dashboard-head-page.png"), full_page=True)
