"""The Streamlit dashboard (`make dashboard`): apps/dashboard.py is the entry point."""
