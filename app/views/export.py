"""Export: the trace file, an offline HTML report, tables as CSV, figures as SVG/PDF/PNG.

Every file records the checkpoint, its weight hash, the code version and the settings.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import streamlit as st

from rmt_core import RMTLensError
from rmt_core.viz import export, figures
from rmt_core.viz.report import report_html

from app import sidebar
from app.views.common import require_trace, show_figure


def _via_file(write) -> bytes:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "out"
        written = write(path)
        return Path(written).read_bytes()


def render() -> None:
    st.header("Export figures, numbers and the trace")
    trace = require_trace()
    if trace is None:
        return
    segment = sidebar.selected_segment(trace)
    stem = (trace.model_info["name"] + "-" + str(trace.meta.get("document", "document"))).replace(" ", "_")[:60]
    prov = export.provenance(trace)
    c1, c2, c3 = st.columns(3)
    # No help= on these buttons: Streamlit draws a button with a help tooltip twice in the page (a hidden
    # copy for narrow screens), so it was listed twice; the hint is a caption under it instead.
    c1.download_button("Trace file (.rmtrace)", data=lambda: _via_file(lambda p: trace.save(p.with_suffix(".rmtrace"))),
                       file_name=f"{stem}.rmtrace")
    c1.caption("Reopen it in the sidebar (Upload a file), or with `rmt_core.Trace.load(path, model=...)`.")
    c2.download_button("HTML report (works offline)", data=lambda: report_html(trace, segment=segment).encode(),
                       file_name=f"{stem}-report.html", mime="text/html")
    c3.download_button("Per-segment table (CSV)", data=lambda: export.table_csv(export.segment_table(trace)),
                       file_name=f"{stem}-segments.csv", mime="text/csv")
    st.subheader("Figures")
    layers = int(trace.model_info["num_layers"])
    f1, f2, f3, f4 = st.columns(4)
    layer = f2.selectbox("Layer", range(layers), index=layers - 1, key="exp_layer")
    head = f3.selectbox("Head", range(int(trace.model_info["num_heads"])), key="exp_head")
    available = figures.standard_figure_builders(trace, segment=segment, layer=layer, head=head)  # nothing built yet
    name = f1.selectbox("Figure", list(available), key="exp_figure")
    fmt = f4.radio("Format", ["svg", "pdf", "png"], horizontal=True, key="exp_format")
    fig = available[name]()  # only the figure shown
    show_figure(fig, key="exp_preview")
    browser = export.browser_available()
    if browser is None:
        st.info("No Chromium found for static export (install Debian's chromium or set BROWSER_PATH). "
                "The SVG button in each figure's toolbar still works.")
        return
    figure_prov = {**prov, "figure": name, "segment": segment, "layer": layer, "head": head}

    def figure_bytes() -> bytes:
        try:
            return _via_file(lambda p: export.export_figure(export.print_style(fig), p.with_suffix(f".{fmt}"),
                                                            format=fmt, provenance=figure_prov))
        except RMTLensError as exc:  # shown on the next rerun; the download gets the message
            return f"Export failed: {exc}".encode()

    st.download_button(f"Download {name}.{fmt} (styled for print)", data=figure_bytes, file_name=f"{name}.{fmt}")
    with st.expander("Provenance recorded in every file"):
        st.json(prov)
