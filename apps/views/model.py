"""Model view: the next-token predictions for the prompt, the logit lens, and chosen tokens (or a
logit difference) followed across the layers at one position."""

from __future__ import annotations

import streamlit as st

from apps import state
from interp.lens import follow_tokens
from interp.viz.attention import logit_lens_figure, predictions_figure, token_labels
from interp.viz.lens import token_trace_figure


def follow_panel(model, prompt: str, result: dict, default: str, default_id: int) -> None:
    """A token (the top prediction by default: `default`, id `default_id`), optionally minus another,
    followed across the layers at one position: its logit (or the logit difference), probability and
    rank after each layer."""
    st.subheader("Follow a token across the layers")
    n_pos = len(result["str_tokens"])
    st.session_state["lens_follow_pos"] = min(int(st.session_state.get("lens_follow_pos", n_pos - 1)), n_pos - 1)
    if st.session_state.get("lens_token") in (None, st.session_state.get("_lens_default")):
        st.session_state["lens_token"] = default  # untouched: follows the prompt's top prediction
    st.session_state["_lens_default"] = default
    c1, c2, c3 = st.columns([2, 2, 1])
    first = c1.text_input("Token", key="lens_token",
                          help="exactly one token of this model, leading space included (e.g. ' Paris')")  # fmt: skip
    second = c2.text_input("…minus token (optional)", key="lens_token_minus",
                           help="a second token: follow the logit difference, the first's logit minus this one's")  # fmt: skip
    position = int(c3.number_input("Position", 0, n_pos - 1, key="lens_follow_pos",
                                   help="the prediction made at this token (counted from 0; the last by default)"))  # fmt: skip
    tokens = [default_id if t == default else t for t in (first, second) if t]  # the default by id: it may not re-encode
    if not tokens:
        st.info("Type a token to follow.")
        return
    with state.shows_errors():
        with state.model_lock("token trace"):
            trace = follow_tokens(model, prompt, tokens, position,
                                  residuals=(result["tokens"].to(model.device), result["resid"]))  # fmt: skip
        st.plotly_chart(token_trace_figure(trace), key="lens_follow")
        last = ", ".join(f"{t!r}: logit {trace.logits[-1, i]:.2f}, p {trace.probs[-1, i]:.3f}, rank {int(trace.ranks[-1, i])}"
                         for i, t in enumerate(trace.tokens))  # fmt: skip
        diff = trace.logit_diff
        st.caption(f"After the last layer (the model's own prediction at {trace.input_token!r}): {last}"
                   + (f"; logit difference {float(diff[-1]):+.3f}" if diff is not None else "") + ".")


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
    follow_panel(model, prompt, result, top_tok, int(lens.top_ids[-1, -1, 0]))
