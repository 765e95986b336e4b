"""The workbench dashboard: one `st.navigation` entry point over thin views (apps/views/*.py).
Run with `make dashboard` (streamlit run apps/dashboard.py)."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `streamlit run apps/dashboard.py` puts only apps/ on the path
    sys.path.insert(0, str(ROOT))

import streamlit as st

from apps import state

VIEWS = [  # (file under apps/, title, icon)
    ("views/model.py", "Model", ":material/psychology:"),
    ("views/attention.py", "Attention", ":material/grid_on:"),
    ("views/heads.py", "Heads", ":material/hub:"),
    ("views/ioi.py", "IOI circuit", ":material/account_tree:"),
    ("views/circuit.py", "Circuit", ":material/share:"),
    ("views/memories.py", "FFN memories", ":material/memory:"),
    ("views/features.py", "Features", ":material/scatter_plot:"),
    ("views/graph.py", "Attribution graph", ":material/polyline:"),
    ("views/training.py", "Training runs", ":material/monitoring:"),
]

st.set_page_config(page_title="interp-workbench", page_icon=":material/biotech:", layout="wide")
if not state.address_chosen():  # apps/.streamlit/config.toml unread (an old Streamlit?): listening everywhere
    st.error("This dashboard was started without an address, so it listens on every network interface; it serves "
             "nothing that way. Restart it with `make dashboard` (this machine only) or `make dashboard "
             "ADDRESS=0.0.0.0` (a network, on purpose).")
    st.stop()
page = st.navigation([st.Page(path, title=title, icon=icon) for path, title, icon in VIEWS])
state.sidebar()
page.run()
