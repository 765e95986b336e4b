"""Attention view: one head's pattern with token hover, and all heads of a layer at a glance."""

from __future__ import annotations

import streamlit as st

from apps import state
from interp.viz.attention import attention_figure, head_grid_figure

st.title("Attention")
spec, prompt = state.current_spec(), state.current_prompt()
with state.shows_errors():
    model = state.get_model(spec)
    info = model.info
    left, right = st.columns(2)
    layer = left.number_input("Layer", 0, info.n_layers - 1, min(st.session_state.get("attn_layer", 0), info.n_layers - 1),
                              key="attn_layer_input")
    head = right.number_input("Head", 0, info.n_heads - 1, min(st.session_state.get("attn_head", 0), info.n_heads - 1),
                              key="attn_head_input")
    st.session_state["attn_layer"], st.session_state["attn_head"] = int(layer), int(head)
    patterns, str_tokens = state.layer_patterns(spec, prompt, int(layer))
    group = info.n_heads // info.n_kv_heads
    kv_note = f" (shares key/value head {head // group} with heads {head // group * group}–{head // group * group + group - 1})" \
        if group > 1 else ""
    st.caption(f"{info.name}: {info.n_layers} layers × {info.n_heads} heads{kv_note}. Rows attend to columns; "
               "hover a cell for the destination token, the source token and the weight.")
    st.plotly_chart(attention_figure(patterns[int(head)], str_tokens, title=f"L{layer}H{head}"), key="head_pattern")
    st.subheader(f"All heads of layer {layer}")
    st.plotly_chart(head_grid_figure(patterns, str_tokens, int(layer)), key="layer_grid")
