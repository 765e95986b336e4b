"""One Streamlit page per file; each is thin: read the sidebar's state, call interp.*, draw."""
