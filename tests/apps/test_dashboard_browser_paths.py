"""Issue 28 in a real browser: no refusal shows a visitor a server folder. A dashboard served "to a
network" (on 127.0.0.2, a loopback address our LOOPBACK list does not name, so every network
check applies and nothing leaves the machine) is given paths outside its allowed roots, a missing
index inside them, a damaged index and bad task files in every view; each refusal is a message
naming no absolute path, and no exception or traceback reaches the page."""

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
ADDRESS = "127.0.0.2"
ABSOLUTE = re.compile(r"(^|[\s'\"(,=:])/[\w.-]")  # a slash starting a word: an absolute path


@pytest.fixture(scope="module")
def served(tiny_llama4_dir, tiny_index, tmp_path_factory):
    """A network-mode dashboard whose roots are a fresh folder (out/ with a good and a damaged
    index) and the tiny model's folder; the sidebar starts on the tiny model."""
    from safetensors.torch import load_file, save_file

    if not Path(server.CHROMIUM).exists() and not shutil.which("chromium"):
        pytest.fail("Chromium is missing: run `make browser` (apt-get install -y chromium)")
    roots = tmp_path_factory.mktemp("roots")
    shutil.copytree(tiny_index, roots / "out" / "damaged")
    keys = load_file(str(roots / "out" / "damaged" / "keys.safetensors"))
    keys["0.ref"].fill_(10**9)
    save_file(keys, str(roots / "out" / "damaged" / "keys.safetensors"))
    ARTIFACTS.mkdir(exist_ok=True)
    env = {"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2"),
           "INTERP_ALLOWED_ROOTS": os.pathsep.join([str(roots), str(tiny_llama4_dir)]),
           "INTERP_DEFAULT_MODEL": str(tiny_llama4_dir), "INTERP_RUNS_DIR": str(roots / "runs")}  # fmt: skip
    proc, url = server.start(env=env, address=ADDRESS, log=ARTIFACTS / "dashboard-paths-server.log", timeout=120)
    yield url, roots
    server.stop(proc)


@pytest.fixture(scope="module")
def page(served):
    with chromium_page(height=2000) as page:
        yield page


def _refusal(page, has_text: str) -> str:
    """The error alert containing `has_text`, once the run is over; no exception on the page."""
    alert = page.locator('[data-testid="stAlertContentError"]').filter(has_text=has_text)
    alert.first.wait_for()
    wait_idle(page)
    assert page.locator('[data-testid="stException"]').count() == 0
    return alert.first.inner_text()


def _go(page, title: str) -> None:
    page.locator('[data-testid="stSidebarNav"]').get_by_role("link", name=title, exact=True).click()
    page.get_by_role("heading", name=title, level=1, exact=True).wait_for()
    wait_idle(page)


def test_no_refusal_shows_an_absolute_path(page, served, tiny_llama4_dir):
    url, roots = served
    page.goto(url)
    page.get_by_text(re.compile("^Top prediction")).wait_for()  # the tiny model, inside the roots
    wait_idle(page)
    seen = []
    fill(page, "…or a hub id, local folder or .gguf path", "/etc")
    seen.append(_refusal(page, "outside the folders this server may open"))
    fill(page, "…or a hub id, local folder or .gguf path", "")
    page.get_by_text(re.compile("^Top prediction")).wait_for()

    _go(page, "FFN memories")
    fill(page, "…or an index folder", str(roots / "out" / "missing"))
    seen.append(_refusal(page, "no memory index at"))
    fill(page, "…or an index folder", "/proc/self")
    seen.append(_refusal(page, "outside the folders"))
    fill(page, "…or an index folder", str(roots / "out" / "damaged"))
    seen.append(_refusal(page, "is damaged"))
    page.get_by_text("Build an index for this model").click()
    fill(page, "Output folder", "/var/tmp/idx")
    page.get_by_role("button", name="Build").click()
    seen.append(_refusal(page, "output folder"))

    _go(page, "Circuit")
    page.get_by_test_id("stMain").get_by_test_id("stSelectbox").filter(has_text="Task").click()
    page.get_by_role("option", name="a task file (.jsonl)").click()
    wait_idle(page)
    fill(page, re.compile("^Path to a .jsonl file"), "/etc/passwd")
    seen.append(_refusal(page, "outside the folders"))

    _go(page, "IOI circuit")
    page.get_by_text("open a saved run").click()
    fill(page, "…or a path to circuit.json (or its folder)", "../../../etc/hosts")
    seen.append(_refusal(page, "outside the folders"))

    _go(page, "Training runs")
    fill(page, "…or a run folder", "/usr/share")
    seen.append(_refusal(page, "outside the folders"))
    page.screenshot(path=str(ARTIFACTS / "dashboard-refusals.png"))

    server_paths = [str(ROOT), str(roots), str(tiny_llama4_dir), str(Path.home())]
    for text in seen:
        assert not ABSOLUTE.search(text), text
        assert not any(re.search(re.escape(p) + r"(?![\w.-])", text) for p in server_paths), text
        assert "Traceback" not in text
