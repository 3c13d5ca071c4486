"""Exports for papers: provenance, print styling, CSV tables, static figures (kaleido + Chromium), the HTML report."""
from __future__ import annotations

import rmt_core
import csv
import io
import json
import math
import xml.etree.ElementTree as ET
from html.parser import HTMLParser

import numpy as np
import pytest
import torch

from rmt_core.explain import analysis
from rmt_core.viz import export
from rmt_core.errors import RMTLensError
from rmt_core.viz.export import ExportError
from rmt_core.viz.figures import standard_figures
from rmt_core.viz.report import build_report

from test_evaluation import make_fact_model

torch.set_num_threads(1)

TEXT = ("It is a truth universally acknowledged, that a single man in possession of a good fortune, "
        "must be in want of a wife. However little known the feelings or views of such a man may be "
        "on his first entering a neighbourhood, this truth is so well fixed in the minds of the families.")


@pytest.fixture(scope="module")
def trace():
    model = make_fact_model()
    model.name = "tiny-fact"
    tr = rmt_core.trace(model, TEXT)
    tr.meta["document"] = "pride <&> prejudice.txt"  # needs escaping everywhere it goes
    assert tr.num_segments >= 3
    return tr


@pytest.fixture
def browser() -> str:
    path = export.browser_available()
    if path is None:
        pytest.skip("no Chromium for kaleido: install Debian's chromium or set BROWSER_PATH "
                    "(looked at $BROWSER_PATH, $CHROMIUM, /usr/bin/chromium and chromium/chrome on PATH)")
    return path


# ---------------------------------------------------------------------- provenance
def test_provenance_records_what_made_the_numbers(trace):
    prov = export.provenance(trace, segment=1)
    assert prov["checkpoint"] == "tiny-fact"
    assert prov["weights_hash"] == trace.model_info["weights_hash"] == trace.model.weights_hash()
    from rmt_core import __version__
    assert prov["rmt_lens_version"] == __version__
    assert prov["settings"] == trace.settings
    assert prov["rmt_config"]["num_mem_tokens"] == 4
    assert prov["document"] == "pride <&> prejudice.txt"
    assert prov["segment"] == 1 and prov["tokens"] == trace.num_tokens
    assert prov["exported_at"].endswith("+00:00")
    json.dumps(prov)  # plain JSON


def test_embed_and_read_provenance_without_a_browser(trace, tmp_path):
    from PIL import Image
    from pypdf import PdfReader, PdfWriter

    prov = export.provenance(trace)
    svg = b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect width="5" height="5"/></svg>'
    writer = PdfWriter()
    writer.add_blank_page(width=72, height=72)
    pdf = io.BytesIO()
    writer.write(pdf)
    png = io.BytesIO()
    Image.new("RGB", (4, 3), "white").save(png, format="PNG")
    for fmt, data in (("svg", svg), ("pdf", pdf.getvalue()), ("png", png.getvalue())):
        path = tmp_path / f"f.{fmt}"
        path.write_bytes(export.embed_provenance(data, fmt, prov))
        assert export.read_provenance(path) == prov, fmt
    root = ET.parse(tmp_path / "f.svg").getroot()
    assert root.find("{http://www.w3.org/2000/svg}rect") is not None  # the drawing is untouched
    assert "tiny-fact" in PdfReader(str(tmp_path / "f.pdf")).metadata["/Subject"]
    with pytest.raises(ExportError, match="format"):
        export.embed_provenance(svg, "eps", prov)


# ---------------------------------------------------------------------- print style, tables
def test_print_style_is_a_plain_copy(trace):
    fig = standard_figures(trace)["slot_norms"]
    before = fig.to_json()
    styled = export.print_style(fig)
    assert fig.to_json() == before  # original unchanged
    assert styled.layout.title.text is None
    assert styled.layout.meta["title"] == "Memory slot norms"
    assert styled.layout.paper_bgcolor == "white" and styled.layout.plot_bgcolor == "white"
    assert 12 <= styled.layout.font.size <= 14
    assert styled.layout.xaxis.title.text == "segment"  # axis titles stay
    timeline = export.print_style(standard_figures(trace)["timeline"])
    assert [a.text for a in timeline.layout.annotations][0] == "per-segment mean loss (nats/token)"  # subplot titles stay


def test_table_csv_round_trips():
    rows = [{"a": 1, "b": np.float32(0.5), "c": "x, \"y\"\nz"}, {"a": np.int64(2), "d": None, "b": float("nan")}]
    text = export.table_csv(rows)
    parsed = list(csv.reader(io.StringIO(text)))
    assert parsed[0] == ["a", "b", "c", "d"]
    assert parsed[1] == ["1", "0.5", "x, \"y\"\nz", ""]
    assert parsed[2] == ["2", "", "", ""]
    assert export.table_csv([], columns=["x"]) == "x\n"


def test_segment_table(trace):
    rows = export.segment_table(trace)
    assert [r["segment"] for r in rows] == list(range(trace.num_segments))
    assert sum(r["tokens"] for r in rows) == trace.num_tokens
    assert rows[0]["loss"] == pytest.approx(trace.segments[0].loss)
    assert math.isclose(rows[1]["perplexity"], math.exp(rows[1]["loss"]), rel_tol=1e-9)
    assert list(rows[0]) == list(export.SEGMENT_COLUMNS)  # each column has its meaning
    assert "the segment's tokens attend to the read slots R_k" in export.SEGMENT_COLUMNS["tokens_to_read_mass"]
    assert rows[2]["write_to_tokens_mass"] == pytest.approx(analysis.block_mass(trace, "write->tokens")[2])


# ---------------------------------------------------------------------- browser
def test_no_browser_raises_a_clear_error(monkeypatch, trace, tmp_path):
    monkeypatch.delenv("BROWSER_PATH", raising=False)
    monkeypatch.setattr(export, "browser_available", lambda: None)
    with pytest.raises(ExportError) as info:
        export.export_figure(standard_figures(trace)["slot_norms"], tmp_path / "x.svg")
    message = str(info.value)
    assert message.startswith("No Chromium-family browser found")
    assert "chromium" in message and "BROWSER_PATH" in message and "SVG download in the app" in message
    assert isinstance(info.value, RMTLensError)
    assert not (tmp_path / "x.svg").exists()


def test_bad_browser_path_is_named(monkeypatch):
    monkeypatch.setenv("BROWSER_PATH", "/nonexistent/chromium")
    assert export.browser_available() is None
    with pytest.raises(ExportError, match="BROWSER_PATH='/nonexistent/chromium' is not an executable"):
        export.render_figures([])


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["svg", "pdf", "png"])
def test_export_figure_embeds_provenance(fmt, trace, tmp_path, browser):
    from PIL import Image
    from pypdf import PdfReader

    prov = export.provenance(trace)
    fig = export.print_style(standard_figures(trace)["block_grid_write_tokens"])
    path = export.export_figure(fig, tmp_path / f"grid.{fmt}", provenance=prov, width=500, height=300)
    data = path.read_bytes()
    if fmt == "svg":
        root = ET.fromstring(data)
        assert root.tag == "{http://www.w3.org/2000/svg}svg"
        meta = root.find("{http://www.w3.org/2000/svg}metadata")
        assert json.loads(meta.text)["weights_hash"] == prov["weights_hash"]
    elif fmt == "pdf":
        assert data.startswith(b"%PDF")
        reader = PdfReader(str(path))
        assert len(reader.pages) == 1
        assert json.loads(reader.metadata["/RMTLens"])["weights_hash"] == prov["weights_hash"]
    else:
        with Image.open(path) as image:
            assert image.format == "PNG" and image.size == (1000, 600)  # scale 2
            assert json.loads(image.text[export.PROVENANCE_KEY])["weights_hash"] == prov["weights_hash"]
        assert b"tEXt" + export.PROVENANCE_KEY.encode() in data  # a tEXt chunk, not iTXt/zTXt
    assert export.read_provenance(path) == prov


# ---------------------------------------------------------------------- report
class _Links(HTMLParser):
    """Every src/href attribute, every <script src>, every iframe srcdoc (attribute values come unescaped)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.urls: list[tuple[str, str, str]] = []
        self.script_src: list[str] = []
        self.srcdocs: list[str] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        for name, value in attrs:
            if name in ("src", "href", "data", "action", "poster", "srcset") and value is not None:
                self.urls.append((tag, name, value))
            if tag == "script" and name == "src":
                self.script_src.append(value or "")
            if tag == "iframe" and name == "srcdoc":
                self.srcdocs.append(value or "")


def _check_offline(page: str, depth: int = 0) -> _Links:
    links = _Links()
    links.feed(page)
    external = [u for u in links.urls if u[2].strip().lower().startswith(("http:", "https:", "//"))]
    assert not external, external
    assert not links.script_src, links.script_src
    assert "<link" not in page.lower() or "stylesheet" not in page.lower()
    for doc in links.srcdocs:  # embedded documents obey the same rule
        _check_offline(doc, depth + 1)
    return links


def test_report_is_self_contained(trace, tmp_path):
    from plotly.offline import get_plotlyjs

    path = build_report(trace, tmp_path / "out" / "report.html", segment=1)
    page = path.read_text(encoding="utf-8")
    links = _check_offline(page)
    assert page.count(get_plotlyjs()[:300]) == 1  # plotly.js inlined exactly once
    assert trace.model_info["weights_hash"] in page
    assert "pride &lt;&amp;&gt; prejudice.txt" in page and "pride <&> prejudice.txt" not in page
    assert len(links.srcdocs) == 1 and "Attention head view" in links.srcdocs[0]
    assert links.tags.count("iframe") == 1
    for name in standard_figures(trace, 1):
        assert f'id="figure-{name}"' in page
    assert "§1" in page  # segment markers of the document view
    prov = page.split('id="rmt-lens-provenance">', 1)[1].split("</script>", 1)[0]
    assert json.loads(prov)["segment"] == 1


def test_report_without_model_says_what_is_missing(trace, tmp_path):
    from rmt_core.tracing.trace import Trace

    path = trace.save(tmp_path / "t.trace")
    bare = Trace.load(path)
    page = build_report(bare, tmp_path / "r.html").read_text(encoding="utf-8")
    links = _check_offline(page)
    assert not links.srcdocs and "Left out" in page and 'id="figure-attention"' not in page
    with pytest.raises(RMTLensError, match="segment must be in"):
        build_report(bare, tmp_path / "r2.html", segment=99)
