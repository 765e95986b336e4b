"""Attention view: one head's pattern (heatmap with token hover, or the prompt as coloured text),
on a linear or log colour scale and optionally with the first token (BOS) hidden and the rest
renormalised; below it every head of the layer as thumbnails, a click on one opens that head."""

from __future__ import annotations

import math

import streamlit as st

from apps import state
from interp.viz.attention import attention_figure, head_from_selection, head_grid_figure, token_view_html


def _open_clicked_head() -> None:
    """on_select of the thumbnails: the clicked head becomes the picked one (the pickers' keys,
    set before they are drawn in the rerun)."""
    grid = st.session_state.get("layer_grid")
    picked = head_from_selection((grid or {}).get("selection", {}).get("points", []))
    if picked is not None:
        st.session_state["attn_layer"], st.session_state["attn_head"] = picked


def _token_view_height(str_tokens: list[str]) -> int:
    """Roughly the token view's height: its controls and info line, and the text's wrapped lines."""
    chars = sum(len(t) + 1 for t in str_tokens) + 6 * sum("\n" in t for t in str_tokens)
    return min(640, 170 + 36 * math.ceil(chars / 95))


st.title("Attention")
spec, prompt = state.current_spec(), state.current_prompt()
with state.shows_errors():
    model = state.get_model(spec)
    info = model.info
    layer, head = state.pick_head(model, "attn")
    patterns, str_tokens = state.layer_patterns(spec, prompt, layer)
    left, right = st.columns(2)
    hide = left.toggle("Hide the first token (BOS) and renormalise", key="attn_hide_bos",
                       help="many heads park most of their attention on the first token; hidden, each row is rescaled "
                            "to sum to 1 over the tokens left, so where the rest goes shows (an induction head's stripe)")  # fmt: skip
    log_scale = right.toggle("Log colour scale", key="attn_log",
                             help="colour by log10 of the weight (from 0.0001 up to 1): small weights beside a large one "
                                  "(attention parked on BOS) become visible; the colour bar's ticks are the weights")  # fmt: skip
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
    value = "weight, renormalised" if hide else "weight"
    as_grid, as_text = st.tabs(["Pattern", "Tokens"])
    with as_grid:
        st.plotly_chart(attention_figure(patterns[head], str_tokens, title=title, log_scale=log_scale, value_label=value),
                        key="head_pattern")
    with as_text:
        st.caption("The prompt as text: hover a token to colour the tokens it attends to by their weight (or, switched, "
                   "the tokens that attend to it); click a token to pin it.")
        st.iframe(token_view_html(patterns[head], str_tokens, title=title, log_scale=log_scale),
                  height=_token_view_height(str_tokens))
    st.subheader(f"All heads of layer {layer}")
    st.caption("Click a thumbnail to show that head above; the framed one is shown.")
    st.plotly_chart(head_grid_figure(patterns, str_tokens, layer, selected=head, log_scale=log_scale, value_label=value),
                    key="layer_grid", on_select=_open_clicked_head, selection_mode="points")
