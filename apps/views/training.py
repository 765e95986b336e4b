"""Training runs view (waiting for interp.train)."""

from __future__ import annotations

import streamlit as st

st.title("Training runs")
st.info("Training runs: not available yet (interp.train is still being written).")
