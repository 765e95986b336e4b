"""Heads view (waiting for interp.heads)."""

from __future__ import annotations

import streamlit as st

st.title("Heads")
st.info("Heads: not available yet (interp.heads is still being written).")
