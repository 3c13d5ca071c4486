"""RMT Lens: `streamlit run app/main.py`.

The entry point lays out the sidebar (model, document, Run/Cancel) and the pages.
Pages only lay out widgets and call app.services / rmt_core.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `app` and `rmt_core` importable

import streamlit as st  # noqa: E402

from rmt_core.viz.figures import use_template_by_default  # noqa: E402

from app import sidebar, threads  # noqa: E402
from app.offline import keep_lookups_local  # noqa: E402
from app.views.common import literal, show_error  # noqa: E402

keep_lookups_local()  # app/main.py run directly too (make app's app/server.py did it at start)
use_template_by_default()  # the figures' template as plotly's default: not validated again for every figure

st.set_page_config(page_title="RMT Lens", page_icon=str(Path(__file__).with_name("icon.png")), layout="wide")  # served locally
try:  # torch threads per job and jobs at once, once per server (app/threads.py)
    threads.configure()
except ValueError as exc:
    st.error(literal(exc))

pages = [
    st.Page("screens/overview.py", title="Overview", icon=":material/home:", url_path="overview", default=True),
    st.Page("screens/timeline.py", title="Timeline", icon=":material/timeline:", url_path="timeline"),
    st.Page("screens/attention.py", title="Attention", icon=":material/grid_on:", url_path="attention"),
    st.Page("screens/memory.py", title="Memory", icon=":material/memory:", url_path="memory"),
    st.Page("screens/attribution.py", title="Attribution", icon=":material/target:", url_path="attribution"),
    st.Page("screens/compare.py", title="Compare", icon=":material/compare:", url_path="compare"),
    st.Page("screens/export.py", title="Export", icon=":material/download:", url_path="export"),
    st.Page("screens/tour.py", title="Guided tour", icon=":material/school:", url_path="tour"),
    st.Page("screens/papers.py", title="Paper figures", icon=":material/description:", url_path="papers"),
    st.Page("screens/study.py", title="Study", icon=":material/table_chart:", url_path="study"),
]
current = st.navigation(pages)
progress = None
try:  # a bug shows one message (its traceback goes to the log file it names), never a traceback
    progress = sidebar.render()
except Exception as exc:
    show_error(exc, "app: sidebar")
try:
    current.run()
except Exception as exc:
    show_error(exc, f"app: page {current.title}")
sidebar.watch_run(progress)  # a run in progress: its progress on every page; never cancelled by a page switch
