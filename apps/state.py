"""The dashboard's shared state: the sidebar's model and prompt, the model cache, and results
cached per (model, parameters). Views call these and draw; analysis lives in interp.*."""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import streamlit as st

from interp import Model, WorkbenchError, load
from interp.models.sources import is_inhouse_dir, registered

DEFAULT_MODEL = os.environ.get("INTERP_DEFAULT_MODEL") or "smollm2-135m"  # the sidebar's first choice
DEFAULT_PROMPT = "When Mary and John went to the store, John gave a drink to"
OTHER = "other (type below)"
DEVICE = os.environ.get("INTERP_DEVICE") or None  # None = cuda when present, else cpu
DTYPE = os.environ.get("INTERP_DTYPE") or None  # None = float32
# torch's intra-op threads in the server (default: torch's own choice, one per core). On a CPU
# shared with the browser, one thread can beat two: see the Dashboard section of benchmarks/RESULTS.md.
THREADS = os.environ.get("INTERP_TORCH_THREADS", "").strip()
if THREADS:
    import torch

    torch.set_num_threads(int(THREADS))
# Hooks live on the shared model object, so two forward passes at once (two browser tabs, or a
# rerun that starts while an interrupted run is still inside torch) would write into each
# other's caches. Every model computation of the dashboard runs under this lock (`model_lock`),
# which waits at most BUSY_WAIT seconds: a visitor never hangs behind another one's long run.
RUN_LOCK = threading.RLock()
BUSY_WAIT = float(os.environ.get("INTERP_BUSY_WAIT", "5"))
# Long runs started from the dashboard (circuits, index builds) are estimated first and refused
# above this many minutes: the lock is never held longer than that by one visitor.
MAX_MINUTES = float(os.environ.get("INTERP_DASHBOARD_MAX_MINUTES", "10"))
MAX_MODELS = int(os.environ.get("INTERP_MAX_MODELS", "2"))  # models kept in memory at once
LOOPBACK = ("127.0.0.1", "localhost", "::1")
log = logging.getLogger("interp.dashboard")


# -- one model computation at a time, and never a hang -------------------------------------------

_holder = threading.local()  # this thread's lock depth
_running: dict = {}  # what the outermost holder runs: {"label", "since"}


@contextmanager
def model_lock(label: str = "computation"):
    """Hold RUN_LOCK for a model computation. When another session holds it for more than
    BUSY_WAIT seconds, a WorkbenchError says the model is busy (with what, for how long) instead
    of waiting: the page answers and keeps the visitor's input."""
    if not RUN_LOCK.acquire(timeout=BUSY_WAIT):
        what = _running.get("label", "computation")
        since = time.time() - _running.get("since", time.time())
        raise WorkbenchError(f"busy: the model is running another session's {what} (for {since:.0f} s so far; runs "
                             f"here are limited to {MAX_MINUTES:g} min); try again shortly, your choices are kept")  # fmt: skip
    depth = getattr(_holder, "depth", 0)
    if depth == 0:
        _running.update(label=label, since=time.time())
    _holder.depth = depth + 1
    try:
        yield
    finally:
        _holder.depth = depth
        if depth == 0:
            _running.clear()
        RUN_LOCK.release()


def check_minutes(seconds: float, what: str) -> None:
    """Refuse a long run estimated above the server's budget (MAX_MINUTES), naming what to lower."""
    from interp.circuits.cost import duration

    if seconds > MAX_MINUTES * 60:
        raise WorkbenchError(f"{what} would take about {duration(seconds)}; this server runs at most {MAX_MINUTES:g} min "
                             "at a time: ask for less (the CLI has no such limit)")  # fmt: skip


# -- what a visitor may read ----------------------------------------------------------------------

_ABSOLUTE = re.compile(r"(?<![\w.~…:/])/[^\s'\"(),;:*?<>|]+")


def public(text: str) -> str:
    """`text` with every absolute path made relative to the server's working folder, or cut to
    its last part ("…/name") when it lies elsewhere: no server folder reaches a visitor."""
    cwd = Path.cwd().resolve()

    def short(m: re.Match) -> str:
        path = Path(m.group(0))
        try:
            rel = path.resolve().relative_to(cwd)
            return str(rel) if str(rel) != "." else "the server's working folder"
        except (ValueError, OSError, RuntimeError):
            return f"…/{path.name}" if path.name else "…"

    return _ABSOLUTE.sub(short, text)


# -- serving beyond this machine -------------------------------------------------------------------


def address_chosen() -> bool:
    """Whether the server's address was set anywhere (a config file, a flag, the environment).
    Unset, Streamlit listens on every interface: apps/.streamlit/config.toml sets 127.0.0.1, and a
    Streamlit too old to read a config file beside the script would leave it unset."""
    from streamlit import config
    from streamlit.config_option import ConfigOption

    return config.get_where_defined("server.address") != ConfigOption.DEFAULT_DEFINITION


def serves_network() -> bool:
    """Whether the server listens beyond loopback (`make dashboard ADDRESS=0.0.0.0`)."""
    address = str(st.get_option("server.address") or "")
    return address not in LOOPBACK


def allowed_roots() -> list[Path]:
    """Where typed paths may point when serving a network: INTERP_ALLOWED_ROOTS (os.pathsep-
    separated), default ./runs and ./out."""
    raw = os.environ.get("INTERP_ALLOWED_ROOTS")
    roots = [Path(r) for r in raw.split(os.pathsep) if r.strip()] if raw else [runs_root(), Path("out")]
    return [r.expanduser().resolve() for r in roots]


def allowed(path: str | Path) -> bool:
    """Whether a network visitor may open `path` (always true on loopback)."""
    if not serves_network():
        return True
    resolved = Path(path).expanduser().resolve()
    return any(resolved == r or r in resolved.parents for r in allowed_roots())


def user_path(text: str, what: str) -> Path:
    """A path typed into (or picked in) the dashboard, resolved (`..` and links followed): the path
    checked is the path used. On loopback any path is the user's own; when serving a network it
    must lie under an allowed root, so visitors cannot read or write elsewhere."""
    if not allowed(text):
        roots = ", ".join(public(str(r)) for r in allowed_roots())
        raise WorkbenchError(f"{what} {public(str(text))!r} is outside the folders this server may open ({roots}); "
                             "set INTERP_ALLOWED_ROOTS on the server to allow more")
    return Path(text).expanduser().resolve()


# -- the sidebar ---------------------------------------------------------------------------------


def runs_root() -> Path:
    """The runs folder: training runs, and every result saved from the dashboard or the CLI
    (INTERP_RUNS_DIR, default ./runs; read at each call, so a test or a server can point it elsewhere)."""
    return Path(os.environ.get("INTERP_RUNS_DIR", "runs"))


def discover_checkpoints(root: Path | None = None) -> list[str]:
    """In-house checkpoints on disk: root/*/checkpoint-* folders and root/* folders that are
    themselves checkpoints, newest step last within a run."""
    root = runs_root() if root is None else root
    if not root.is_dir():
        return []

    def step(path: Path) -> int:
        tail = path.name.rsplit("-", 1)[-1]
        return int(tail) if tail.isdigit() else -1

    found = []
    for run in sorted(p for p in root.iterdir() if p.is_dir()):
        if is_inhouse_dir(run):
            found.append(str(run))
        found += [str(c) for c in sorted(run.glob("checkpoint-*"), key=step) if is_inhouse_dir(c)]
    return [f for f in found if allowed(f)]


def discover_runs(root: Path | None = None) -> list[str]:
    """Training-run folders (they hold metrics.jsonl or checkpoint-* folders)."""
    root = runs_root() if root is None else root
    if not root.is_dir():
        return []
    return [
        str(p) for p in sorted(root.iterdir())
        if p.is_dir() and ((p / "metrics.jsonl").is_file() or any(p.glob("checkpoint-*"))) and allowed(p)
    ]


def model_choices() -> list[str]:
    found = [*registered(), *discover_checkpoints()]
    return [DEFAULT_MODEL, *(n for n in found if n != DEFAULT_MODEL), OTHER]


def sidebar() -> None:
    """The model picker and the prompt, shared by every view through session_state."""
    with st.sidebar:
        st.header("interp-workbench")
        choice = st.selectbox("Model", model_choices(), key="model_choice", format_func=public,
                              help="Registered names, in-house checkpoints under ./runs, or type your own")
        st.text_input("…or a hub id, local folder or .gguf path", key="model_custom",
                      placeholder="e.g. ./runs/tiny/checkpoint-500 or org/name",
                      help="Overrides the list above when not empty")
        st.text_area("Prompt", DEFAULT_PROMPT, key="prompt", height=110)
        if choice == OTHER and not st.session_state.get("model_custom", "").strip():
            st.info("Type a model path or hub id above.")


def current_spec() -> str:
    custom = (st.session_state.get("model_custom") or "").strip()
    if custom:
        return custom
    choice = st.session_state.get("model_choice", DEFAULT_MODEL)
    return "" if choice == OTHER else choice


def current_prompt() -> str:
    return st.session_state.get("prompt", DEFAULT_PROMPT)


@contextmanager
def shows_errors():
    """Inside this block a WorkbenchError becomes an st.error message (server paths made relative,
    `public`); any other exception a one-line message naming only its type, its traceback going to
    the server's log. The page keeps working."""
    try:
        yield
    except WorkbenchError as e:
        st.error(public(str(e)))
    except Exception as e:  # a bug or damaged data: the visitor learns that, the log learns the rest
        log.exception("dashboard error")
        st.error(f"internal error ({type(e).__name__}); this part of the page could not be shown. The server's log "
                 "has the details.")  # fmt: skip


def progress_bar(text: str):
    """An st.progress bar and a `progress(done, total, message)` callback that drives it."""
    bar = st.progress(0.0, text=text)

    def progress(done: int, total: int, message: str = "") -> None:
        bar.progress(min(1.0, done / max(total, 1)), text=f"{text}: {message} ({done}/{total})")

    return bar, progress


MAX_REMEMBERED = 32  # long results kept per browser session
MAX_DRAWN_TOKENS = 128  # at most this many (last) tokens are drawn in a token x token or layer x token figure


def remembered(key: tuple):
    """A long result computed earlier in this session for `key`, or None."""
    return st.session_state.setdefault("_results", {}).get(key)


def remember(key: tuple, label: str, compute):
    """Long work, once per (model, parameters) `key` in this session: `compute(progress)` runs
    under an st.progress bar (removed when done) and its result is kept for later reruns."""
    store = st.session_state.setdefault("_results", {})
    if key in store:
        return store[key]
    bar, progress = progress_bar(label)
    try:
        with model_lock(label.lower()):
            result = compute(progress)
    finally:
        bar.empty()
    if len(store) >= MAX_REMEMBERED:
        store.pop(next(iter(store)))
    store[key] = result
    return result


# -- saved results (interp.runs): every result computed here lands in the runs folder -------------


def saved_runs(kind: str, *extra_roots: Path) -> list:
    """The results of `kind` saved under the runs folder (and `extra_roots`), newest first, those a
    network visitor may open."""
    from interp.runs import find_runs

    roots = [runs_root(), *(r for r in extra_roots if r.resolve() != runs_root().resolve())]
    return [r for root in roots for r in find_runs(root, [kind]) if allowed(r.folder)]


def saved_match(kind: str, spec: str, settings: dict):
    """The result saved earlier for exactly this model and these settings (any session), or None."""
    from interp.runs import saved_run

    found = saved_run(runs_root(), kind, spec, settings)
    return found if found is not None and allowed(found.folder) else None


def save_result(key: tuple, kind: str, spec: str, settings: dict, fill, extra: dict | None = None) -> None:
    """Save a result just computed (`fill(folder)` writes the CLI's files) into the runs folder,
    atomically; a failed save is one line, the result stays on the page."""
    from interp.runs import save_run

    with shows_errors():
        root = user_path(str(runs_root()), "runs folder")
        folder = save_run(root, kind, spec, settings, fill, extra)
        st.session_state.setdefault("_saved", {})[key] = str(folder)


def saved_note(key: tuple) -> None:
    """Where the result of `key` was saved in this session, if it was."""
    folder = st.session_state.get("_saved", {}).get(key)
    if folder:
        st.caption(f"Saved in {public(folder)}: open it again from **open a saved run**, in any session.")


def pick_saved(runs: list, key: str, label: str = "Saved run"):
    """A select box over saved results (SavedRun), labelled with what, which model, when and the
    settings; returns the chosen one or None when there is none."""
    if not runs:
        return None
    by_folder = {str(r.folder): r for r in runs}
    choice = st.selectbox(label, list(by_folder), key=key, format_func=lambda f: public(f"{f}: {by_folder[f].describe()}"))
    return by_folder.get(choice)


def opened_note(run) -> None:
    """What an opened saved result is: its folder, model, time and settings."""
    st.caption(f"Opened {public(str(run.folder))}: {run.describe()} (made by the {run.made_by}).")


# -- models --------------------------------------------------------------------------------------


@st.cache_resource(max_entries=MAX_MODELS, show_spinner="Loading model…")
def _load(spec: str) -> Model:
    try:
        return load(spec, device=DEVICE, dtype=DTYPE)
    except WorkbenchError:
        raise
    except Exception as e:  # a loader bug or an exotic checkpoint must not take the page down
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise WorkbenchError(f"could not load model {spec!r} ({type(e).__name__}: {first}); pick another model") from e


def get_model(spec: str | None = None) -> Model:
    spec = current_spec() if spec is None else spec
    if not spec:
        raise WorkbenchError("no model chosen: pick one in the sidebar or type a hub id / folder / .gguf path")
    if serves_network():  # network visitors get no hub downloads and no files outside the roots
        entry = registered().get(spec)
        if entry is None:
            spec = str(user_path(spec, "model"))
        elif entry.kind == "hub" and not _hub_cached(entry.location):
            raise WorkbenchError(f"{spec} is not on this server and visitors cannot download models; pick "
                                 f"{DEFAULT_MODEL} or another model the server holds")  # fmt: skip
    return _load(spec)


def _hub_cached(repo: str) -> bool:
    """Whether the hub model `repo` is in the local Hugging Face cache (no network asked)."""
    try:
        from huggingface_hub import snapshot_download

        snapshot_download(repo, local_files_only=True, allow_patterns=["config.json"])
        return True
    except (OSError, ValueError):  # not cached (LocalEntryNotFoundError is both), or not a repo id
        return False


# -- results cached per (model, parameters) ------------------------------------------------------


@st.cache_data(max_entries=32, show_spinner=False)
def prompt_predictions(spec: str, prompt: str, k: int = 10) -> dict:
    """The model's top-k next tokens for one prompt, and the residual streams the logit lens
    needs, from one forward pass (shown before the lens is projected)."""
    from interp.lens import final_predictions, lens_residuals

    model = get_model(spec)
    with model_lock("forward pass"):
        tokens, resid = lens_residuals(model, prompt)
        predictions = final_predictions(model, resid, k)
    return {"predictions": predictions, "str_tokens": model.to_str_tokens(tokens[0]),
            "tokens": tokens.cpu(), "resid": resid.cpu()}


@st.cache_data(max_entries=128, show_spinner=False)
def prompt_lens(spec: str, prompt: str, k: int = 10, last: int | None = None):
    """The logit lens for one prompt (top-k per layer, at its `last` positions or all of them),
    reusing the forward pass of `prompt_predictions`."""
    from interp.lens import logit_lens

    model = get_model(spec)
    got = prompt_predictions(spec, prompt)
    with model_lock("logit lens"):
        return logit_lens(model, prompt, k=k, residuals=(got["tokens"].to(model.device), got["resid"]), last=last)


def _patterns(model, tokens, layer: int) -> np.ndarray:
    """Attention patterns [head, dest, src] of `layer` for one sequence (the pass stops there)."""
    from interp.hooks import layer_pattern

    with model_lock("attention patterns"):
        return layer_pattern(model, tokens, layer)[0].float().cpu().numpy()


def drawable(patterns: np.ndarray, str_tokens: list[str]) -> tuple[np.ndarray, list[str]]:
    """Patterns [head, dest, src] cut to the last MAX_DRAWN_TOKENS tokens (rows and columns),
    with a caption saying so: a long prompt's full grid would not fit in the page."""
    n = len(str_tokens)
    if n <= MAX_DRAWN_TOKENS:
        return patterns, str_tokens
    st.caption(f"The prompt has {n} tokens: drawn are the last {MAX_DRAWN_TOKENS} (their rows and columns); "
               "attention to earlier tokens is left out of the picture.")
    return patterns[:, -MAX_DRAWN_TOKENS:, -MAX_DRAWN_TOKENS:], str_tokens[-MAX_DRAWN_TOKENS:]


def without_first(patterns: np.ndarray, str_tokens: list[str]) -> tuple[np.ndarray, list[str]]:
    """Patterns [head, dest, src] with the first token (BOS, where the model prepends one) hidden:
    its row and column dropped and every other row renormalised over the tokens left, so a head
    that parks most of its attention on BOS shows where the rest goes. A row that put all its
    weight on the first token stays all zero."""
    rest = patterns[:, 1:, 1:]
    total = rest.sum(-1, keepdims=True)
    return np.divide(rest, total, out=np.zeros_like(rest), where=total > 1e-12), str_tokens[1:]


@st.cache_data(max_entries=256, show_spinner=False)
def layer_patterns(spec: str, prompt: str, layer: int) -> tuple[np.ndarray, list[str]]:
    """Attention patterns [head, dest, src] of one layer for the prompt, and its tokens."""
    model = get_model(spec)
    tokens = model.to_tokens(prompt)
    return _patterns(model, tokens, layer), model.to_str_tokens(tokens[0])


@st.cache_data(max_entries=64, show_spinner=False)
def probe_patterns(spec: str, layer: int, seg_len: int = 20, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """Attention patterns [head, dest, src] of one layer on a repeated random-token sequence
    (BOS + segment + the same segment), where induction and previous-token heads show stripes."""
    from interp.data.synthetic import repeated_tokens

    model = get_model(spec)
    seg_len = max(1, min(seg_len, (model.info.n_ctx - 1) // 2))
    tokens = repeated_tokens(model, 1, seg_len, seed=seed)
    return _patterns(model, tokens, layer), model.to_str_tokens(tokens[0])


def pick_head(model, prefix: str, default: tuple[int, int] = (0, 0)) -> tuple[int, int]:
    """Layer and head number inputs (keys `{prefix}_layer`, `{prefix}_head`), kept inside the
    model's range when another model is picked; set those keys before the call to pick a head."""
    info = model.info
    bounds = {f"{prefix}_layer": (info.n_layers - 1, default[0]), f"{prefix}_head": (info.n_heads - 1, default[1])}
    for key, (top, value) in bounds.items():
        current = st.session_state.get(key, value)
        st.session_state[key] = int(min(max(0, current), top))
    left, right = st.columns(2)
    layer = left.number_input("Layer", 0, info.n_layers - 1, key=f"{prefix}_layer")
    head = right.number_input("Head", 0, info.n_heads - 1, key=f"{prefix}_head")
    return int(layer), int(head)


def keep_options(key: str, options: list[str]) -> None:
    """Drop a widget's remembered choices that are no longer offered (another graph, size or grouping)."""
    value = st.session_state.get(key)
    if isinstance(value, list):
        st.session_state[key] = [v for v in value if v in options]
    elif value is not None and value not in options:
        st.session_state[key] = None
