"""Dashboard latency: from a prompt edit to the rendered predictions (Model view) and attention
(Attention view), with SmolLM2 after warm-up, p50/p95 over N edits (each a new prompt, so no
cache hits). Goal: p95 < 1.5 s on CPU.

Two measurements of the same edits, plus the baseline they are compared with:
  floor    the bare library work for one edit: top predictions + logit lens + one layer's patterns
  apptest  Streamlit's AppTest: the edit's script run, server side (model + Python + figures)
  browser  a real `streamlit run` server and headless Chromium: Ctrl+Enter in the prompt box until the
           new predictions are drawn, then until the whole view (logit lens included) is, and the
           attention view (the user's latency; skipped with --no-browser or without Chromium)
  profile  where the Model view's server time goes, per edit: the forward (residuals + top
           predictions), the lens projection, the figures (built and serialised as Streamlit sends
           them), as wall and process CPU time (CPU time is steadier on a shared machine), and the
           bytes of the figures sent to the browser

    python benchmarks/dashboard.py [--device cpu] [--model SPEC] [--dtype float32] [--edits 20]
                                   [--threads N] [--no-apptest] [--no-browser]

--threads sets torch's intra-op threads in this process and in the served dashboard
(INTERP_TORCH_THREADS); the machine's load average is printed before and after.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

NAMES = ["Alice", "Bob", "Carol", "David", "Emma", "Frank", "Grace", "Henry", "Irene", "James", "Karen", "Louis",
         "Maria", "Nathan", "Olivia", "Peter", "Quinn", "Rachel", "Steven", "Thomas", "Ursula", "Victor"]


def prompts(n: int, offset: int = 0) -> list[str]:
    return [f"{NAMES[(i + offset) % len(NAMES)]} and her friend {i + offset} visited the capital of France, the city of"
            for i in range(n)]


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, round(q / 100 * (len(xs) - 1))))]


def summary(name: str, xs: list[float]) -> str:
    return f"{name:<22} p50 {statistics.median(xs) * 1000:7.0f} ms   p95 {pct(xs, 95) * 1000:7.0f} ms   (n={len(xs)})"


def floor_once(model, prompt: str, layer: int) -> float:
    """The bare library work of one edit: the logit lens (top 10 at every layer and position, which
    includes the predictions) and one full forward caching the layer's attention pattern."""
    import torch

    from interp.lens import logit_lens

    name = f"blocks.{layer}.attn.hook_pattern"
    t = time.perf_counter()
    logit_lens(model, prompt, k=10)
    with torch.no_grad():
        model.run_with_cache(model.to_tokens(prompt), names_filter=lambda n: n == name)
    return time.perf_counter() - t


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def profile(spec: str, edits: list[str]) -> dict[str, list[float]]:
    """Per edit, the Model view's server work step by step (as apps/views/model.py and
    apps/state.py do it, without Streamlit): wall and CPU seconds, and the figures' bytes."""
    import plotly.io as pio

    from apps import state
    from interp.lens import final_predictions, lens_residuals, logit_lens
    from interp.viz.attention import logit_lens_figure, predictions_figure

    model = state.get_model(spec)
    out: dict[str, list[float]] = {}

    def step(name: str, fn):
        t, c = time.perf_counter(), time.process_time()
        got = fn()
        out.setdefault(f"{name} wall", []).append(time.perf_counter() - t)
        out.setdefault(f"{name} cpu", []).append(time.process_time() - c)
        return got

    for i, prompt in enumerate(prompts(2, offset=50) + edits):
        tokens, resid = step("forward", lambda p=prompt: lens_residuals(model, p))
        preds = step("predictions", lambda r=resid: final_predictions(model, r, 10))
        lens = step("lens", lambda t=tokens, r=resid: logit_lens(model, None, k=1, residuals=(t, r), last=24))
        figs = step("figures", lambda p=preds, lens=lens: [pio.to_json(f, validate=False) for f in (
            predictions_figure([t for t, _ in p], [q for _, q in p], title="x"), logit_lens_figure(lens, title="x"))])
        out.setdefault("predictions figure bytes", []).append(len(figs[0]))
        out.setdefault("lens figure bytes", []).append(len(figs[1]))
        if i < 2:  # warm-up
            out = {k: [] for k in out}
    return out


def apptest(spec: str, edits: list[str], layer: int) -> tuple[list[float], list[float], list[float]]:
    """Per edit, interleaved so all three see the same machine load: the Model page's script run,
    the Attention page's script run, and the library floor on the same (cached) model object."""
    from streamlit.testing.v1 import AppTest

    from apps import state  # the module the in-process AppTest uses: its model cache is ours

    def run(at):
        t = time.perf_counter()
        at.run()
        assert not at.exception, [e.value for e in at.exception]
        return time.perf_counter() - t

    model_page = AppTest.from_file(str(ROOT / "apps/dashboard.py"), default_timeout=300)
    attn_page = AppTest.from_file(str(ROOT / "apps/dashboard.py"), default_timeout=300)
    for at in (model_page, attn_page):
        at.session_state["model_custom"] = spec
        at.session_state["prompt"] = "warm-up prompt for the dashboard"
        at.run()
    attn_page.switch_page("views/attention.py").run()
    attn_page.number_input(key="attn_layer").set_value(layer).run()
    model = state.get_model(spec)
    for prompt in prompts(2, offset=30):  # warm-up
        floor_once(model, prompt, layer)
    m, a, f = [], [], []
    for prompt in edits:
        model_page.sidebar.text_area(key="prompt").set_value(prompt)
        m.append(run(model_page))
        assert any(x.value.startswith("Top prediction") for x in model_page.markdown)
        attn_page.sidebar.text_area(key="prompt").set_value(prompt)
        a.append(run(attn_page))
        f.append(floor_once(model, prompt, layer))
    return m, a, f


def browser(spec: str, edits: list[str], env: dict) -> tuple[list[float], list[float], list[float]] | None:
    """Per edit: (Model view: predictions drawn, Model view: whole view drawn with the logit lens,
    Attention view drawn). The Model view draws its predictions first (their title names the
    prompt), then projects and draws the lens."""
    from apps import server

    if not Path(server.CHROMIUM).exists():
        print("browser: skipped (no /usr/bin/chromium; run `make browser`)")
        return None
    from playwright.sync_api import sync_playwright

    proc, url = server.start(env=env, timeout=180)
    charts = "[...document.querySelectorAll('[data-testid=\"stPlotlyChart\"]')]"
    predictions = f"word => {charts}.some(c => c.querySelector('.main-svg') && c.textContent.includes('after \u201c' + word))"
    # Model view: both charts' titles quote the prompt; Attention view: the token labels spell it
    drawn = {view: f"""word => document.querySelector('[data-testid="stApp"]').dataset.testScriptState === 'notRunning'
        && {charts}.length > 0 && {charts}.every(c => c.querySelector('.main-svg'))
        && {charts}.{quantifier}(c => c.textContent.includes({marker}))"""
             for view, quantifier, marker in (("Model", "every", "'\\u201c' + word"), ("Attention", "some", "word"))}
    try:
        with sync_playwright() as p:
            b = p.chromium.launch(executable_path=server.CHROMIUM, args=server.CHROMIUM_ARGS)
            page = b.new_page(viewport={"width": 1400, "height": 1600})
            page.set_default_timeout(float(os.environ.get("BENCH_TIMEOUT_MS", "300000")))
            page.goto(url)
            page.get_by_label("Prompt").wait_for()
            if spec != "smollm2-135m":
                page.get_by_label("…or a hub id, local folder or .gguf path").fill(spec)
                page.get_by_label("…or a hub id, local folder or .gguf path").press("Enter")
            results: dict[str, list[float]] = {"predictions": [], "Model": [], "Attention": []}
            for view in ("Model", "Attention"):
                page.locator('[data-testid="stSidebarNav"]').get_by_role("link", name=view).click()
                page.get_by_role("heading", name=view, level=1).wait_for()
                for i, prompt in enumerate(prompts(2, offset=40) + edits):  # two warm-up edits
                    word = prompt.split()[0]
                    box = page.get_by_label("Prompt")
                    box.fill(prompt)
                    t = time.perf_counter()
                    box.press("Control+Enter")
                    try:
                        if view == "Model":
                            page.wait_for_function(predictions, arg=word, polling=20)
                            first = time.perf_counter() - t
                        page.wait_for_function(drawn[view], arg=word, polling=20)
                    except Exception:
                        page.screenshot(path="/tmp/bench-fail.png", full_page=True)
                        raise
                    if i >= 2:
                        results[view].append(time.perf_counter() - t)
                        if view == "Model":
                            results["predictions"].append(first)
            b.close()
    finally:
        server.stop(proc)
    return results["predictions"], results["Model"], results["Attention"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", help="cpu, cuda, ... (default cpu)")
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--edits", type=int, default=20)
    ap.add_argument("--layer", type=int, default=9, help="attention layer shown")
    ap.add_argument("--dtype", default=None, help="float32, bfloat16, ... (default: the model's own)")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--no-apptest", action="store_true")
    ap.add_argument("--no-browser", action="store_true")
    args = ap.parse_args(argv)
    os.environ["INTERP_DEVICE"] = args.device  # read by apps/state.py
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    env = {"INTERP_DEVICE": args.device, "HF_HUB_OFFLINE": "1"}
    if args.dtype:
        os.environ["INTERP_DTYPE"] = env["INTERP_DTYPE"] = args.dtype
    if args.threads:
        os.environ["INTERP_TORCH_THREADS"] = env["INTERP_TORCH_THREADS"] = str(args.threads)
    import torch

    print(f"dashboard latency, {args.model} on {args.device} ({args.dtype or 'its own dtype'}, "
          f"{args.threads or torch.get_num_threads()} torch threads), {args.edits} prompt edits after warm-up; "
          f"load average {load_average()}")
    edits = prompts(args.edits)
    prof = profile(args.model, edits)
    for name, xs in prof.items():
        if name.endswith("bytes"):
            print(f"profile {name:<26} {statistics.median(xs):9.0f}")
        else:
            print(summary(f"profile {name}", xs))
    result = "RESULT dashboard"
    if not args.no_apptest:
        m, a, base = apptest(args.model, edits, args.layer)
        both = [x + y for x, y in zip(m, a)]
        print(summary("floor (library only)", base))
        print(summary("apptest model view", m))
        print(summary("apptest attention", a))
        print(summary("apptest both views", both))
        result += f" apptest p95(model+attention) {pct(both, 95):.3f} s, {pct(both, 95) / pct(base, 95):.2f}x the library floor"
    if not args.no_browser:
        got = browser(args.model, edits, env)
        if got:
            bp, bm, ba = got
            print(summary("browser predictions", bp))
            print(summary("browser model view+lens", bm))
            print(summary("browser attention", ba))
            goal = max(pct(bp, 95), pct(ba, 95)) < 1.5
            result += (f"; browser p95 predictions {pct(bp, 95):.3f} s, whole model view with the lens {pct(bm, 95):.3f} s, "
                       f"attention view {pct(ba, 95):.3f} s (goal < 1.5 s for predictions and attention: "
                       f"{'met' if goal else 'NOT met'})")
    print(result)
    print(f"load average after: {load_average()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
