"""IOI circuit view (waiting for interp.circuits)."""

from __future__ import annotations

import streamlit as st

st.title("IOI circuit")
st.info("IOI circuit: not available yet (interp.circuits is still being written).")
