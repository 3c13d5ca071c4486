"""RMT Lens: `streamlit run app/main.py`.

The entry point lays out the sidebar (model, document, Run/Cancel) and the pages.
Pages only lay out widgets and call app.services / rmt_core.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `app` and `rmt_core` importable

import streamlit as st  # noqa: E402

from app import sidebar, state  # noqa: E402
from app.views.common import show_error  # noqa: E402

st.set_page_config(page_title="RMT Lens", page_icon="🔁", layout="wide")

pages = [
    st.Page("screens/overview.py", title="Overview", icon="🏠", url_path="overview", default=True),
    st.Page("screens/timeline.py", title="Timeline", icon="📈", url_path="timeline"),
    st.Page("screens/attention.py", title="Attention", icon="🔍", url_path="attention"),
    st.Page("screens/memory.py", title="Memory", icon="🧠", url_path="memory"),
    st.Page("screens/attribution.py", title="Attribution", icon="🎯", url_path="attribution"),
    st.Page("screens/export.py", title="Export", icon="💾", url_path="export"),
    st.Page("screens/tour.py", title="Guided tour", icon="🎓", url_path="tour"),
    st.Page("screens/papers.py", title="Paper figures", icon="📄", url_path="papers"),
]
current = st.navigation(pages)
try:  # a bug shows one message (its traceback goes to the log file it names), never a traceback
    sidebar.render()
except Exception as exc:
    show_error(exc, "app: sidebar")
try:
    current.run()
except Exception as exc:
    show_error(exc, f"app: page {current.title}")
