"""Shared AppTest helpers: open the dashboard on a model/prompt/page and fingerprint what it shows."""

from __future__ import annotations

import re
from contextlib import contextmanager
from pathlib import Path

from streamlit.testing.v1 import AppTest

APP = Path(__file__).resolve().parents[2] / "apps" / "dashboard.py"
VIEWS = ["views/model.py", "views/attention.py", "views/heads.py", "views/ioi.py", "views/circuit.py",
         "views/memories.py", "views/training.py"]


def open_app(spec: str, prompt: str | None = None, page: str | None = None, **state) -> AppTest:
    """Run the dashboard with `spec` typed into the model box (and optionally a prompt / page)."""
    at = AppTest.from_file(str(APP), default_timeout=180)
    at.session_state["model_custom"] = spec
    if prompt is not None:
        at.session_state["prompt"] = prompt
    for key, value in state.items():
        at.session_state[key] = value
    at.run()
    if page:
        at.switch_page(page).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def set_prompt(at: AppTest, prompt: str) -> AppTest:
    at.sidebar.text_area(key="prompt").input(prompt).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def shown(at: AppTest) -> str:
    """Everything a user would read on the page: text, tables and the figures' JSON."""
    parts = [m.value for m in at.markdown] + [c.value for c in at.caption] + [str(d.value) for d in at.dataframe]
    parts += [e.proto.spec for e in at.get("plotly_chart")]
    parts += [str(e.value) for e in at.error] + [str(e.value) for e in at.info]
    return "\n".join(parts)


def errors(at: AppTest) -> list[str]:
    return [e.value for e in at.error]


def _decode(value):
    """Plotly >= 6 writes numpy arrays as {"dtype", "bdata", "shape"}; turn them back into arrays."""
    import base64

    import numpy as np

    if isinstance(value, dict) and "bdata" in value:
        arr = np.frombuffer(base64.b64decode(value["bdata"]), dtype=np.dtype(value["dtype"]))
        shape = value.get("shape")
        return arr.reshape([int(s) for s in str(shape).split(",")]) if shape else arr
    if isinstance(value, dict):
        return {k: _decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


def figures(at: AppTest) -> list[dict]:
    """The page's plotly figures as plain dicts (arrays decoded), in page order."""
    import json

    return [_decode(json.loads(e.proto.spec)) for e in at.get("plotly_chart")]


# -- the browser tests' helpers (Playwright pages) -------------------------------------------------


@contextmanager
def chromium_page(height: int = 2200):
    """A Playwright page in Debian's headless Chromium (apps.server's flags), 1400 px wide."""
    from playwright.sync_api import sync_playwright

    from apps import server

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=server.CHROMIUM, args=server.CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": height})
        page.set_default_timeout(120_000)
        yield page
        browser.close()


def wait_idle(page) -> None:
    """Until the script run is over and every plotly chart has drawn (call it once the new
    content has started to appear, so the run has begun)."""
    page.wait_for_function(
        """() => document.querySelector('[data-testid="stApp"]').dataset.testScriptState === 'notRunning'
                 && [...document.querySelectorAll('[data-testid="stPlotlyChart"]')]
                      .every(c => c.querySelector('.main-svg'))""",
        polling=200,
    )
    page.wait_for_timeout(300)


def fill(page, label: str | re.Pattern, text: str) -> None:
    """Type `text` into the text box named `label` and submit it (Enter)."""
    box = page.get_by_role("textbox", name=label, exact=True) if isinstance(label, str) else page.get_by_role(
        "textbox", name=label)  # fmt: skip
    box.fill(text)
    box.press("Enter")
