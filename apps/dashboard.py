"""The workbench dashboard (Streamlit). Run with `make dashboard`."""

from __future__ import annotations

import streamlit as st

from interp import WorkbenchError, load

DEFAULT_MODEL = "smollm2-135m"
DEFAULT_PROMPT = "The Eiffel Tower is located in the city of"


@st.cache_resource(show_spinner="Loading model...")
def get_model(spec: str):
    return load(spec)


def main() -> None:
    st.set_page_config(page_title="interp-workbench", layout="wide")
    st.title("interp-workbench")
    spec = st.sidebar.text_input("Model", DEFAULT_MODEL)
    prompt = st.text_area("Prompt", DEFAULT_PROMPT)
    try:
        model = get_model(spec)
        preds = model.top_predictions(prompt, 10)
    except WorkbenchError as e:
        st.error(str(e))
        return
    st.caption(repr(model))
    st.table({"token": [repr(t) for t, _ in preds], "probability": [round(p, 4) for _, p in preds]})


main()
