"""RMT Lens Streamlit front end (talks to rmt_core's public API only)."""
