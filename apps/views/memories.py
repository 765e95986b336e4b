"""FFN memories view (waiting for interp.memories)."""

from __future__ import annotations

import streamlit as st

st.title("FFN memories")
st.info("FFN memories: not available yet (interp.memories is still being written).")
