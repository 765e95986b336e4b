"""FFN memories view: pick (or build) an index, browse neurons (trigger examples, value tokens),
search neurons by promoted token, agreement by layer, and switch a memory off/on on the prompt."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from apps import state
from interp.memories import IndexSettings, build_index, intervene, open_index
from interp.parse import LAYERS_HELP, parse_layers
from interp.viz.attention import predictions_figure
from interp.viz.memories import agreement_figure, triggers_html, value_tokens_figure


def find_indexes() -> list[str]:
    """Index folders (a manifest.json) under ./out, ./runs and the working folder."""
    found = []
    for root in (Path("out"), Path("runs"), Path(".")):
        if root.is_dir():
            pattern = "*/manifest.json" if root == Path(".") else "**/manifest.json"
            found += [str(p.parent) for p in root.glob(pattern)]
    return sorted(set(found))


@st.cache_resource(max_entries=4, show_spinner="Opening the index…")
def _open(folder: str, stamp: float):
    return open_index(folder)


def get_index(folder: str):
    manifest = Path(folder).expanduser() / "manifest.json"
    return _open(folder, manifest.stat().st_mtime if manifest.is_file() else 0.0)


st.title("FFN memories")
spec, prompt = state.current_spec(), state.current_prompt()
with state.shows_errors():
    model = state.get_model(spec)
    found = find_indexes()
    if "mem_dir_pending" in st.session_state:
        st.session_state["mem_dir"] = st.session_state.pop("mem_dir_pending")
    c1, c2 = st.columns(2)
    choice = c1.selectbox("Index", found, key="mem_found", placeholder="none found under ./out or ./runs") if found else None
    typed = c2.text_input("…or an index folder", key="mem_dir", placeholder="e.g. out/memories").strip()
    folder = str(state.user_path(typed, "index folder")) if typed else choice
    with st.expander("Build an index for this model", expanded=not folder):
        b1, b2, b3 = st.columns(3)
        out = b1.text_input("Output folder", "out/memories-" + model.info.name.replace("/", "-"), key="mem_out")
        n_tokens = int(b2.number_input("Corpus tokens", 256, 10_000_000, 4096, step=1024, key="mem_tokens"))
        layers_text = b3.text_input(f"Layers ({LAYERS_HELP}; empty = all)", key="mem_layers")
        if st.button("Build", key="mem_build"):
            out = str(state.user_path(out, "output folder"))
            layers = parse_layers(layers_text, model.info.n_layers)
            state.remember(("mem-build", spec, out, n_tokens, tuple(layers or ())), "Indexing FFN memories",
                           lambda progress: build_index(model, IndexSettings(layers=layers, n_tokens=n_tokens), out,
                                                               progress=progress))
            st.session_state["mem_dir_pending"] = out  # the text box takes it on the next run
            st.rerun()

    index = get_index(folder) if folder else None
    if index is None:
        st.info("Pick or build an index to browse memories; the intervention panel below works without one.")
    else:
        made_for = index.model_info.get("name")
        if made_for and made_for != model.info.name:
            st.warning(f"This index was built for {made_for}, not {model.info.name}: triggers and values describe {made_for}.")
        st.caption(repr(index))
        browse, search, agreement = st.tabs(["Browse neurons", "Search by promoted token", "Agreement by layer"])
        with browse:
            l1, l2 = st.columns(2)
            layer = l1.selectbox("Layer", index.layers, key="mem_layer")
            neuron = int(l2.number_input("Neuron", 0, int(index.model_info.get("d_mlp", 1)) - 1, key="mem_neuron"))
            view = index.show(layer, neuron)
            st.markdown(f"**L{layer} N{neuron}**: active on {view.active_fraction:.1%} of indexed tokens")
            left, right = st.columns([3, 2])
            with left:
                st.markdown("Trigger examples (trigger token highlighted, the next token grey)")
                st.html(triggers_html(view, 12))
            with right:
                st.plotly_chart(value_tokens_figure(view), key="mem_values")
        with search:
            token = st.text_input("Token the value promotes", key="mem_search", placeholder="e.g. Lord")
            if token.strip():
                hits = index.search(token.strip())
                st.dataframe([h.__dict__ for h in hits], hide_index=True, key="mem_hits")
                if not hits:
                    st.info(f"No indexed neuron has {token!r} among its value's top tokens.")
        with agreement:
            st.plotly_chart(agreement_figure(index.agreement()), key="mem_agreement")

    st.subheader("Intervention on the prompt")
    if model.info.attn_only or not model.info.d_mlp:
        st.info(f"{model.info.name} is attention-only: it has no FFN memories to switch.")
    else:
        i1, i2, i3 = st.columns(3)
        default_layer = st.session_state.get("mem_layer", 0) if index is not None else 0
        layer = int(i1.number_input("Layer", 0, model.info.n_layers - 1, min(default_layer, model.info.n_layers - 1),
                                    key="mem_int_layer"))
        neuron = int(i2.number_input("Neuron", 0, model.info.d_mlp - 1, key="mem_int_neuron"))
        mode = i3.radio("Switch the memory", ["off", "on"], key="mem_int_mode", horizontal=True)
        result = state.remember(("mem-int", spec, prompt, layer, neuron, mode), "Intervening",
                                lambda progress: intervene(model, prompt, layer, neuron, mode, generate=4))
        m = st.columns(4)
        m[0].metric("Coefficient at the last token", f"{result.original_coefficient:.3f}", f"set to {result.coefficient:.3g}",
                    delta_color="off")
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
                                               f"Memory L{layer} N{neuron} {mode}"), key="mem_after")
            st.markdown(f"Greedy continuation: `{result.generation_after!r}`")
