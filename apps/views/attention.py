"""Attention view: one head's pattern with token hover, and all heads of a layer at a glance;
optionally with the first token (BOS) hidden and the rest renormalised."""

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
    patterns, str_tokens = state.layer_patterns(spec, prompt, layer)
    hide = st.toggle("Hide the first token (BOS) and renormalise", key="attn_hide_bos",
                     help="many heads park most of their attention on the first token; hidden, each row is rescaled "
                          "to sum to 1 over the tokens left, so where the rest goes shows (an induction head's stripe)")  # fmt: skip
    if hide and len(str_tokens) > 1:
        first = str_tokens[0]
        patterns, str_tokens = state.without_first(patterns, str_tokens)
        st.caption(f"Hidden: the first token {first!r}; each row renormalised over the tokens left (a weight is the "
                   "share of what the row gives to tokens other than the first).")  # fmt: skip
    patterns, str_tokens = state.drawable(patterns, str_tokens)
    group = info.n_heads // info.n_kv_heads
    shared = f" (shares key/value head {head // group} with heads {head // group * group}–{head // group * group + group - 1})"
    st.caption(f"{info.name}: {info.n_layers} layers × {info.n_heads} heads{shared if group > 1 else ''}. "
               "Rows attend to columns; hover a cell for the destination token, the source token and the weight.")
    title = f"L{layer}H{head}" + (", first token hidden, renormalised" if hide else "")
    st.plotly_chart(attention_figure(patterns[head], str_tokens, title=title), key="head_pattern")
    st.subheader(f"All heads of layer {layer}")
    st.plotly_chart(head_grid_figure(patterns, str_tokens, layer), key="layer_grid")
