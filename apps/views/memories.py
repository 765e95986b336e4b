"""FFN memories view: pick (or build) an index, browse memories (trigger examples, value tokens;
a memory is one sign of a neuron), search memories by promoted token, agreement by layer, the
memories behind the prompt's prediction (LM-Debugger's trace, by direct effect or LM-Debugger's
ranking, with each memory's total effect and an off switch), and a memory switched off/on on the
prompt at the press of a button. Each panel shows its own input errors; the others keep working."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from apps import state
from interp import WorkbenchError
from interp.memories import IndexSettings, build_index, intervene, open_index, switch_off, trace
from interp.memories.trace import N_TOTAL, RANKINGS, check_index_model
from interp.parse import LAYERS_HELP, parse_layers
from interp.viz.attention import predictions_figure
from interp.viz.memories import agreement_figure, trace_figure, triggers_html, value_tokens_figure

SIGN_LABELS = {"+": "+ (coefficient > 0)", "-": "− (coefficient < 0, value −W_out)"}


def find_indexes() -> list[str]:
    """Finished index folders under the runs folder, ./out and the working folder (those a network
    visitor may open, when serving one), newest first."""
    runs = state.saved_runs("memories", Path("out"))
    here = [str(p.parent) for p in Path(".").glob("*/manifest.json") if state.allowed(p.parent)]
    found = [str(r.folder) for r in runs]
    return found + sorted(set(here) - set(found))


@st.cache_resource(max_entries=4, show_spinner="Opening the index…")
def _open(folder: str, stamp: float):
    return open_index(folder)


def get_index(folder: str):
    manifest = Path(folder).expanduser() / "manifest.json"
    return _open(folder, manifest.stat().st_mtime if manifest.is_file() else 0.0)


def build_bounded(model, settings, out: str, progress):
    """build_index, after timing one window's forward and refusing a build the server's budget
    cannot hold (the keys stage is about one forward a window; the values and agreement add little)."""
    import torch

    from interp.circuits.cost import seconds_per_forward

    progress(0, 1, "estimating the time")
    window = torch.randint(0, model.info.d_vocab, (1, min(settings.seq_len, model.info.n_ctx)), device=model.device)
    per_window = seconds_per_forward(model, window, sample=1)
    state.check_minutes(settings.n_tokens / max(settings.seq_len - 1, 1) * per_window,
                        f"indexing {settings.n_tokens:,} tokens")  # fmt: skip
    return build_index(model, settings, out, progress=progress)


def pick_sign(index, key: str) -> str:
    signs = list(index.signs)
    if len(signs) == 1:
        return signs[0]
    return st.radio("Memory", signs, key=key, horizontal=True, format_func=SIGN_LABELS.get)


def index_panel(model, spec: str):
    """Pick, type or build an index; returns the open index or None."""
    found = find_indexes()
    if "mem_dir_pending" in st.session_state:
        st.session_state["mem_dir"] = st.session_state.pop("mem_dir_pending")
    c1, c2 = st.columns(2)
    choice = c1.selectbox("Index", found, key="mem_found", placeholder="none found under the runs folder or ./out") if found else None
    typed = c2.text_input("…or an index folder", key="mem_dir", placeholder="e.g. out/memories").strip()
    with st.expander("Build an index for this model", expanded=not (typed or choice)):
        b1, b2, b3 = st.columns(3)
        out = b1.text_input("Output folder", str(state.runs_root() / ("memories-" + model.info.name.replace("/", "-"))),
                            key="mem_out", help="the runs folder by default, where every session finds it again; an "
                            "interrupted build resumes from its last shard")  # fmt: skip
        n_tokens = int(b2.number_input("Corpus tokens", 256, 10_000_000, 4096, step=1024, key="mem_tokens"))
        layers_text = b3.text_input(f"Layers ({LAYERS_HELP}; empty = all)", key="mem_layers")
        if st.button("Build", key="mem_build"):
            with state.shows_errors():
                out = str(state.user_path(out, "output folder"))
                layers = parse_layers(layers_text, model.info.n_layers)
                settings = IndexSettings(layers=layers, n_tokens=n_tokens).check_sizes()
                state.remember(("mem-build", spec, out, n_tokens, tuple(layers or ())), "Indexing FFN memories",
                               lambda progress: build_bounded(model, settings, out, progress))
                st.session_state["mem_dir_pending"] = out  # the text box takes it on the next run
                st.rerun()
    with state.shows_errors():
        picked = typed or choice  # a picked folder is checked like a typed one
        return get_index(str(state.user_path(picked, "index folder"))) if picked else None
    return None


def fits(index, model, warn: bool = True) -> bool:
    """Whether the index was built for this model (name and shapes); with `warn`, a warning says why not."""
    try:
        check_index_model(index, model)
        return True
    except WorkbenchError as e:
        if warn:
            st.warning(state.public(str(e)) + " Its triggers and values describe that model.")
        return False


def browse_panel(index, model) -> None:
    fits(index, model)
    st.caption(state.public(repr(index)))
    browse, search, agreement = st.tabs(["Browse memories", "Search by promoted token", "Agreement by layer"])
    with browse, state.shows_errors():
        l1, l2, l3 = st.columns(3)
        layer = l1.selectbox("Layer", index.layers, key="mem_layer")
        neuron = int(l2.number_input("Neuron", 0, max(index.d_mlp - 1, 0), key="mem_neuron"))
        with l3:
            sign = pick_sign(index, "mem_sign")
        view = index.show(layer, neuron, sign)
        st.markdown(f"**{view.name}**: active on {view.active_fraction:.1%} of indexed tokens")
        left, right = st.columns([3, 2])
        with left:
            st.markdown("Trigger examples (trigger token highlighted, the next token grey)")
            if view.triggers:
                st.html(triggers_html(view, 12))
            else:
                st.info("This memory was never active on the indexed tokens: no trigger examples.")
        with right:
            st.plotly_chart(value_tokens_figure(view), key="mem_values")
    with search, state.shows_errors():
        token = st.text_input("Token the value promotes", key="mem_search", placeholder="e.g. Lord")
        if token.strip():
            hits = index.search(token.strip())
            st.dataframe([h.__dict__ for h in hits], hide_index=True, key="mem_hits")
            if not hits:
                st.info(f"No indexed memory has {token!r} among its value's top tokens.")
    with agreement, state.shows_errors():
        groups = ["all", *index.signs] if len(index.signs) > 1 else ["all"]
        group = st.radio("Memories", groups, key="mem_group", horizontal=True,
                         format_func=lambda g: "both signs" if g == "all" else f"sign {g}")  # fmt: skip
        rows = index.agreement(group)
        st.plotly_chart(agreement_figure(rows), key="mem_agreement")
        st.dataframe([{k: r[k] for k in ("layer", "n_memories", "agreement", "agreement_lo", "agreement_hi",
                                         "agreement_baseline", "agreement_p", "same_last", "same_last_baseline")}
                      for r in rows], hide_index=True, key="mem_agreement_rows")  # fmt: skip


def trace_panel(model, spec: str, prompt: str, index) -> None:
    st.subheader("Memories behind the prediction")
    usable = index if index is not None and fits(index, model, warn=False) else None
    key_index = str(usable.folder) if usable is not None else None
    rank = st.radio("Rank memories by", list(RANKINGS), key="mem_trace_rank", horizontal=True,
                    format_func={"direct": "direct effect on the predicted token",
                                 "lm-debugger": "LM-Debugger's |coefficient| × value norm"}.get,
                    help="; ".join(f"{k}: {v}" for k, v in RANKINGS.items()))  # fmt: skip
    t = state.remember(("mem-trace", spec, prompt, key_index, rank), "Tracing the prediction",
                       lambda progress: trace(model, prompt, top=10, per_layer=3, index=usable, progress=progress,
                                              rank=rank))  # fmt: skip
    st.markdown(f"Prediction **{t.token!r}** (p = {t.prob:.3f}, logit {t.logit:.3f}). Ranked by **{t.ranking_label}**. "
                f"A memory's direct effect is its coefficient × its value's logit for {t.token!r}, through the final "
                f"norm's scale at the last token ({t.scale:.3g}); it ignores what later layers do with the memory's "
                f"output, which its total effect includes.")  # fmt: skip
    st.plotly_chart(trace_figure(t), key="mem_trace")
    rows = [{"memory": m.name, "direct effect": round(m.contribution, 4),
             "total effect": None if m.total_effect is None else round(m.total_effect, 4),
             f"p({t.token!r}) off": None if m.prob_off is None else round(m.prob_off, 4),
             f"rank of {t.token!r} in value": m.token_rank, "coefficient": round(m.coefficient, 3),
             "|coef| × value norm": round(m.lm_debugger_score, 3),
             "value's top tokens": " ".join(repr(tok) for tok, _ in m.value_tokens[:6]),
             "top trigger": ("…" + "".join(m.triggers[0].before[-6:]) + f"[{m.triggers[0].token}]") if m.triggers else ""}
            for m in t.top]  # fmt: skip
    st.dataframe(rows, hide_index=True, key="mem_trace_rows")
    st.caption(f"Total effect: the logit of {t.token!r} minus its logit with that memory switched off at every position "
               f"(p({t.token!r}) then beside it), for the first {N_TOTAL} rows; a memory whose direct effect raises the "
               f"token can lower it in total. Rank: where {t.token!r} stands in the memory's value projected onto the "
               "vocabulary (1 = the value's top token).")  # fmt: skip
    names = {m.name: (m.layer, m.neuron, m.sign) for m in t.top}
    chosen = st.multiselect("Switch off (together) and see the new prediction", list(names), key="mem_trace_off")
    if chosen:
        off = state.remember(("mem-off", spec, prompt, tuple(chosen)), "Switching memories off",
                             lambda progress: switch_off(model, prompt, [names[c] for c in chosen]))  # fmt: skip
        st.markdown(f"With {', '.join(chosen)} off: p({off.token!r}) {off.prob_before:.3f} → {off.prob_after:.3f}; "
                    f"new prediction **{off.new_token!r}** (p = {off.top_after[0][1]:.3f})")  # fmt: skip
        st.plotly_chart(predictions_figure([tok for tok, _ in off.top_after], [p for _, p in off.top_after],
                                           "With the chosen memories off"), key="mem_trace_after")  # fmt: skip


def intervention_panel(model, spec: str, prompt: str, index) -> None:
    st.subheader("Intervention on the prompt")
    i1, i2, i3, i4 = st.columns(4)
    default_layer = st.session_state.get("mem_layer", 0) if index is not None else 0
    layer = int(i1.number_input("Layer", 0, model.info.n_layers - 1, min(default_layer, model.info.n_layers - 1),
                                key="mem_int_layer"))  # fmt: skip
    neuron = int(i2.number_input("Neuron", 0, model.info.d_mlp - 1, key="mem_int_neuron"))
    sign = i3.radio("Memory", ["+", "-"], key="mem_int_sign", horizontal=True, format_func=SIGN_LABELS.get)
    mode = i4.radio("Switch the memory", ["off", "on"], key="mem_int_mode", horizontal=True)
    key = ("mem-int", spec, prompt, layer, neuron, sign, mode)
    result = state.remembered(key)
    if result is None and st.button(f"Switch L{layer} N{neuron}{sign} {mode}", key="mem_int_run"):
        result = state.remember(key, "Intervening", lambda progress: intervene(
            model, prompt, layer, neuron, mode, generate=4, sign=sign, progress=progress))
    if result is None:
        st.info("Pick a memory and press the button: the prompt runs with that memory switched off (or on), and "
                "greedy continuations are generated before and after.")  # fmt: skip
        return
    m = st.columns(4)
    other = "-" if sign == "+" else "+"
    m[0].metric(f"L{layer} N{neuron}{sign}'s coefficient at the last token", f"{result.memory_coefficient:.3f}",
                f"set to {result.coefficient:.3g}", delta_color="off",
                help=f"this memory's own coefficient: sign × the neuron's coefficient where positive, else 0. The neuron's "
                     f"coefficient is {result.neuron_coefficient:.3f}")  # fmt: skip
    if result.memory_coefficient == 0 and result.neuron_coefficient != 0:
        st.caption(f"The neuron's coefficient at the last token is {result.neuron_coefficient:.3f}: its {other} memory is "
                   f"the active one there, so L{layer} N{neuron}{sign} is silent at that token.")  # fmt: skip
    m[1].metric(f"p({result.value_token!r}), the value's top token", f"{result.value_token_prob[1]:.4f}",
                f"{result.value_token_prob[1] - result.value_token_prob[0]:+.4f}")
    m[2].metric("KL(before ‖ after)", f"{result.kl:.4f}")
    m[3].metric("Largest logit change", f"{result.logit_change:.3f}")
    left, right = st.columns(2)
    with left:
        st.plotly_chart(predictions_figure([t for t, _ in result.top_before], [p for _, p in result.top_before],
                                           "Before"), key="mem_before")
        st.markdown(f"Greedy continuation: `{result.generation_before!r}`")
    with right:
        st.plotly_chart(predictions_figure([t for t, _ in result.top_after], [p for _, p in result.top_after],
                                           f"Memory L{layer} N{neuron}{sign} {mode}"), key="mem_after")
        st.markdown(f"Greedy continuation: `{result.generation_after!r}`")


st.title("FFN memories")
spec, prompt = state.current_spec(), state.current_prompt()
model = None
with state.shows_errors():
    model = state.get_model(spec)
if model is None:
    st.stop()
if model.info.attn_only or not model.info.d_mlp:
    st.info(f"{model.info.name} is attention-only: it has no FFN memories.")
    st.stop()
index = index_panel(model, spec)
if index is None:
    st.info("Pick or build an index to browse memories; the panels below work without one.")
else:
    browse_panel(index, model)
with state.shows_errors():
    trace_panel(model, spec, prompt, index)
with state.shows_errors():
    intervention_panel(model, spec, prompt, index)
