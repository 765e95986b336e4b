"""Model view: the next-token predictions for the prompt, and the logit lens."""

from __future__ import annotations

import streamlit as st

from apps import state
from interp.viz.attention import logit_lens_figure, predictions_figure, token_labels


def _short(prompt: str, width: int = 36) -> str:
    """The prompt on one line, its middle elided past `width` characters."""
    text = " ".join(prompt.split())
    return text if len(text) <= width else f"{text[: width // 2 - 1]}…{text[-(width // 2 - 1):]}"


st.title("Model")
spec, prompt = state.current_spec(), state.current_prompt()
with state.shows_errors():
    model = state.get_model(spec)
    st.caption(state.public(repr(model)))
    result = state.prompt_predictions(spec, prompt)
    preds = result["predictions"]
    top_tok, top_p = preds[0]
    st.markdown(f"Top prediction: **`{token_labels([top_tok])[0]}`** (p = {top_p:.3f}) after "
                f"{len(result['str_tokens'])} tokens")
    left, right = st.columns([2, 3])
    with left:
        st.plotly_chart(predictions_figure([t for t, _ in preds], [p for _, p in preds],
                                           title=f"Next-token predictions after “{_short(prompt)}”"),
                        key="predictions")
    with right:
        st.dataframe(
            {"token": [repr(t) for t, _ in preds], "probability": [p for _, p in preds]},
            column_config={"probability": st.column_config.ProgressColumn(
                "probability", min_value=0.0, max_value=1.0, format="%.4f")},
            hide_index=True, key="predictions_table",
        )
    n_pos = len(result["str_tokens"])
    st.subheader("Logit lens")
    st.caption("The top next token if the model stopped after each layer (rows: embedding at the bottom, "
               "last block on top; colour = its probability). Hover for the rank of the final prediction.")
    shown = n_pos
    if n_pos > 24:
        most = min(n_pos, state.MAX_DRAWN_TOKENS)
        shown = st.slider("Positions shown (the last ones)", 4, most, 24, key="lens_positions")
        if most < n_pos:
            st.caption(f"The prompt has {n_pos} tokens; the lens is drawn for at most the last {most}.")
    # the predictions above are already on screen; the figure draws each cell's top-1 token only
    lens = state.prompt_lens(spec, prompt, k=1, last=shown)
    st.plotly_chart(logit_lens_figure(lens, title=f"Logit lens of “{_short(prompt)}”: top next token after each layer"),
                    key="logit_lens")
