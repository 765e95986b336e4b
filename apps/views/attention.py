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
    layer, head = state.pick_head(model, "attn")
    patterns, str_tokens = state.drawable(*state.layer_patterns(spec, prompt, layer))
    group = info.n_heads // info.n_kv_heads
    shared = f" (shares key/value head {head // group} with heads {head // group * group}–{head // group * group + group - 1})"
    st.caption(f"{info.name}: {info.n_layers} layers × {info.n_heads} heads{shared if group > 1 else ''}. "
               "Rows attend to columns; hover a cell for the destination token, the source token and the weight.")
    st.plotly_chart(attention_figure(patterns[head], str_tokens, title=f"L{layer}H{head}"), key="head_pattern")
    st.subheader(f"All heads of layer {layer}")
    st.plotly_chart(head_grid_figure(patterns, str_tokens, layer), key="layer_grid")
