"""The Attention view in Chromium (issue 27): a click anywhere on a thumbnail of the all-heads grid opens
that head above (pickers, pattern title, token view), and hovering a token of the token view colours the
others by the weights in its data."""

from __future__ import annotations

import json
import os
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


def _title(page) -> str:
    return page.locator('[data-testid="stPlotlyChart"]').first.locator(".gtitle").text_content()


def test_browser_thumbnail_click_opens_the_head_and_tokens_hover(tiny_run):
    if not Path(server.CHROMIUM).exists() and not shutil.which("chromium"):
        pytest.fail("Chromium is missing: run `make browser` (apt-get install -y chromium)")
    ARTIFACTS.mkdir(exist_ok=True)
    env = {"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2"),
           "INTERP_DEFAULT_MODEL": str(tiny_run / "checkpoint-20"),  # 2 layers x 4 heads: seconds, not a download
           "INTERP_RUNS_DIR": str(tiny_run.parent)}  # fmt: skip
    proc, url = server.start(env=env, log=ARTIFACTS / "attention-server.log", timeout=120)
    try:
        with chromium_page() as page:
            page.goto(url)
            page.locator('[data-testid="stSidebarNav"]').get_by_role("link", name="Attention").click()
            page.get_by_role("heading", name="Attention", level=1).wait_for()
            page.get_by_text("All heads of layer 0").wait_for()
            wait_idle(page)
            assert _title(page) == "L0H0"

            # a click off-centre on the third thumbnail (head 2) opens that head
            grid = page.locator('[data-testid="stPlotlyChart"]').nth(1)
            box = grid.locator(".nsewdrag").nth(2).bounding_box()
            x, y = box["x"] + box["width"] * 0.25, box["y"] + box["height"] * 0.7
            page.mouse.move(x, y)
            assert "L0H2" in grid.locator(".hoverlayer .hovertext").first.text_content()
            page.mouse.click(x, y)
            page.wait_for_function(
                """() => document.querySelector('[data-testid="stPlotlyChart"] .gtitle')?.textContent === 'L0H2'""",
                polling=200,
            )
            wait_idle(page)
            assert page.get_by_label("Head", exact=True).input_value() == "2"
            assert "L0H2 ▲" in grid.locator(".annotation-text").all_text_contents()
            page.screenshot(path=str(ARTIFACTS / "dashboard-attention-click.png"))

            # the token view shows head 2; hovering token 3 colours each token by the weight token 3 gives it
            page.get_by_role("tab", name="Tokens").click()
            frame = page.frame_locator('[data-testid="stIFrame"]')
            assert frame.locator("#title").text_content() == "L0H2"
            data = json.loads(frame.locator("#token-view-data").text_content())
            tokens = frame.locator(".tok")
            assert tokens.count() == len(data["tokens"]) > 4
            tokens.nth(3).hover()
            weights = [float(w) for w in tokens.evaluate_all("els => els.map(e => e.dataset.weight)")]
            assert weights == pytest.approx(data["pattern"][3], abs=1e-9)
            alphas = tokens.evaluate_all("els => els.map(e => getComputedStyle(e).backgroundColor)")
            assert alphas[4:] == ["rgba(8, 81, 156, 0)"] * (len(alphas) - 4)  # later tokens: causal mask
            assert all(a != "rgba(8, 81, 156, 0)" for a in alphas[:4])
            assert frame.locator("#info").text_content().startswith("Token 3 ")
            page.screenshot(path=str(ARTIFACTS / "dashboard-attention-tokens.png"))
            assert page.locator('[data-testid="stException"]').count() == 0
            assert page.locator('[data-testid="stAlertContentError"]').count() == 0
    finally:
        server.stop(proc)
