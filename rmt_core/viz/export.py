"""Figures and numbers for papers: static SVG / PDF / PNG files that record how they were made.

Every exported file carries the trace's provenance (:func:`provenance`): checkpoint name,
weights hash, RMT Lens version, trace settings, RMT config, document name and export time.

* SVG: a ``<metadata id="rmt-lens-provenance">`` element holding the JSON.
* PDF: the document-information entry ``/RMTLens`` (JSON), plus ``/Creator`` and ``/Subject``.
* PNG: a ``tEXt`` chunk with the keyword ``rmt-lens-provenance`` (ASCII JSON).

Static rendering uses kaleido 1.x, which drives a Chromium-family browser over the DevTools
protocol. Debian's ``chromium`` package is enough: :func:`browser_available` finds it
(``BROWSER_PATH``, then ``CHROMIUM``, then ``/usr/bin/chromium`` and the usual names on
``PATH``) and the exporters point kaleido at it through ``BROWSER_PATH``. Without a browser
they raise :class:`ExportError`; the app's browser-side SVG download still works.
"""
from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import shutil
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence
from xml.sax.saxutils import escape as _xml_escape

import numpy as np

from ..errors import RMTLensError
from ..tracing.observables import BY_NAME, block_pair_meaning

__all__ = [
    "ExportError", "FORMATS", "PROVENANCE_KEY", "browser_available", "require_browser", "provenance", "export_figure",
    "export_figures", "render_figures", "embed_provenance", "read_provenance", "print_style", "table_csv",
    "segment_table", "SEGMENT_COLUMNS", "ASSOCIATIVE_SEGMENT_COLUMNS", "segment_columns", "to_jsonable",
]

FORMATS = ("svg", "pdf", "png")
PROVENANCE_KEY = "rmt-lens-provenance"  # SVG metadata id and PNG tEXt keyword
PDF_KEY = "/RMTLens"
PRINT_FONT = "Helvetica, Arial, sans-serif"
PRINT_FONT_SIZE = 12
RENDER_TIMEOUT_S = 120
_BROWSER_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
_NO_BROWSER = ("No Chromium-family browser found for static export (kaleido needs one): install Debian's "
               "chromium (apt-get install chromium) or set BROWSER_PATH to a Chrome/Chromium executable; "
               "the browser-side SVG download in the app still works.")


class ExportError(RMTLensError):
    """A figure or table cannot be exported (no browser for kaleido, a failed render, a bad format)."""


# ---------------------------------------------------------------------- provenance
def provenance(trace, **extra: Any) -> dict[str, Any]:
    """What made these numbers: checkpoint, weights hash, code version, settings, document, time.

    `extra` adds (or overrides) entries, e.g. the figure's segment, layer and head.
    """
    from .._version import __version__

    info = trace.model_info
    meta = getattr(trace, "meta", {}) or {}
    record: dict[str, Any] = {
        "tool": "RMT Lens",
        "rmt_lens_version": __version__,
        "trace_made_with_version": getattr(trace, "version", None),
        "checkpoint": info.get("name"),
        "weights_hash": info.get("weights_hash"),
        "model": {k: info.get(k) for k in ("num_layers", "num_heads", "hidden_size", "vocab_size")},
        "rmt_config": info.get("rmt", {}),
        "settings": dict(trace.settings),
        "document": meta.get("document"),
        "tokens": int(trace.num_tokens),
        "segments": int(trace.num_segments),
        "trace_complete": bool(trace.complete),
        "exported_at": datetime.now(timezone.utc).replace(microsecond=0).isoformat(),
    }
    record.update(extra)
    return to_jsonable(record)


def to_jsonable(value: Any) -> Any:
    """Plain JSON types (numpy scalars and arrays, tuples and paths converted)."""
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def _provenance_json(prov: Mapping[str, Any]) -> str:
    return json.dumps(to_jsonable(prov), sort_keys=True, ensure_ascii=True)


# ---------------------------------------------------------------------- browser
def browser_available() -> str | None:
    """Path of a Chromium-family browser kaleido can drive, or None.

    Order: $BROWSER_PATH (kaleido's own override; None if it is set but not executable),
    $CHROMIUM, /usr/bin/chromium, chromium/chrome on PATH, a browser choreographer downloaded.
    """
    if "BROWSER_PATH" in os.environ:
        path = os.environ["BROWSER_PATH"]
        return path if _is_executable(path) else None
    candidates = [os.environ.get("CHROMIUM"), "/usr/bin/chromium"]
    candidates += [shutil.which(name) for name in _BROWSER_NAMES]
    for candidate in candidates:
        if candidate and _is_executable(candidate):
            return candidate
    try:  # a browser fetched by `plotly_get_chrome` / `choreo_get_chrome`, or a typical install path
        from choreographer.browsers.chromium import Chromium

        found = Chromium.find_browser(skip_local=False)
    except Exception:  # noqa: BLE001 - best effort
        found = None
    return found if found and _is_executable(found) else None


def _is_executable(path: str) -> bool:
    return os.path.isfile(path) and os.access(path, os.X_OK)


def require_browser() -> str:
    """The browser path (also put in $BROWSER_PATH for kaleido); ExportError when there is none."""
    path = browser_available()
    if path is None:
        if "BROWSER_PATH" in os.environ:
            raise ExportError(f"BROWSER_PATH={os.environ['BROWSER_PATH']!r} is not an executable file. {_NO_BROWSER}")
        raise ExportError(_NO_BROWSER)
    os.environ.setdefault("BROWSER_PATH", path)  # kaleido/choreographer read it
    return path


# ---------------------------------------------------------------------- styling
def print_style(fig, font_size: int = PRINT_FONT_SIZE, font_family: str = PRINT_FONT):
    """A copy of `fig` styled for print: white background, one sans-serif font size,
    axis lines and outside ticks, no figure title (axis titles, subplot titles and colour-bar
    titles stay). The original is unchanged; the removed title is kept in layout.meta.title.
    """
    import plotly.graph_objects as go

    out = go.Figure(fig)
    title = _title_text(fig)
    meta = out.layout.meta if isinstance(out.layout.meta, dict) else {}
    out.update_layout(
        template="simple_white",
        title=None,
        paper_bgcolor="white",
        plot_bgcolor="white",
        font={"family": font_family, "size": font_size, "color": "black"},
        margin={"l": 60, "r": 20, "t": 30 if out.layout.annotations else 15, "b": 50},
        meta={**meta, "title": title},
    )
    out.update_xaxes(showline=True, linecolor="black", ticks="outside", mirror=False)
    out.update_yaxes(showline=True, linecolor="black", ticks="outside", mirror=False)
    for annotation in out.layout.annotations or ():  # subplot titles
        annotation.font = {"family": font_family, "size": font_size, "color": "black"}
    return out


def _title_text(fig) -> str:
    title = fig.layout.title
    text = getattr(title, "text", None) if title is not None else None
    return str(text or "")


# ---------------------------------------------------------------------- rendering
def render_figures(jobs: Sequence[tuple[Any, Mapping[str, Any]]], timeout: float = RENDER_TIMEOUT_S,
                   progress=None) -> list[bytes]:
    """Render (figure, opts) pairs with one browser session; opts: format, width, height, scale.

    progress(done, total) is called after each render (from the rendering thread).
    Raises ExportError when no browser is found or a render fails.
    """
    require_browser()
    try:
        import kaleido
    except ImportError as exc:  # pragma: no cover - kaleido is in requirements.txt
        raise ExportError("Static export needs kaleido>=1 (pip install 'kaleido>=1').") from exc

    specs = [(f.to_dict() if hasattr(f, "to_dict") else f, dict(o)) for f, o in jobs]

    async def render_all() -> list[bytes]:
        # mathjax=False: our figures use no LaTeX, and kaleido would otherwise fetch MathJax from a CDN.
        async with kaleido.Kaleido(n=1, timeout=timeout, mathjax=False) as k:
            out = []
            for fig, opts in specs:
                out.append(await k.calc_fig(fig, opts=opts))
                if progress is not None:
                    progress(len(out), len(specs))
            return out

    result: dict[str, Any] = {}

    def run() -> None:  # own thread and event loop: safe inside Streamlit or Jupyter loops
        try:
            result["value"] = asyncio.run(render_all())
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            result["error"] = exc

    thread = threading.Thread(target=run, name="rmt-lens-kaleido", daemon=True)
    thread.start()
    thread.join()
    if "error" in result:
        exc = result["error"]
        if isinstance(exc, KeyboardInterrupt):
            raise exc
        raise ExportError(f"Static export with kaleido failed ({type(exc).__name__}: "
                          f"{' '.join(str(exc).split()) or 'no message'}). Browser: {os.environ.get('BROWSER_PATH')}."
                          ) from exc
    return result["value"]


def _opts(fmt: str, width: int | None, height: int | None, scale: float) -> dict[str, Any]:
    if fmt not in FORMATS:
        raise ExportError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}.")
    # Vector formats keep their nominal size (CSS px = the sizes fonts were set in); scale is PNG resolution.
    opts: dict[str, Any] = {"format": fmt, "scale": scale if fmt == "png" else 1}
    if width:
        opts["width"] = int(width)
    if height:
        opts["height"] = int(height)
    return opts


def export_figure(fig, path: str | os.PathLike, format: str | None = None, provenance: Mapping[str, Any] | None = None,
                  width: int | None = None, height: int | None = None, scale: float = 2) -> Path:
    """Write one figure as SVG, PDF or PNG (format: from the suffix when None), with provenance embedded.

    width/height: layout pixels (default: the figure's own, else 700 x 500). scale: PNG pixel
    multiplier (vector formats are written at their nominal size). Returns the path written.
    Raises ExportError without a browser ("install Debian's chromium or set BROWSER_PATH").
    """
    path = Path(path)
    fmt = (format or path.suffix.lstrip(".") or "svg").lower()
    data = render_figures([(fig, _opts(fmt, width, height, scale))])[0]
    return _write(path, embed_provenance(data, fmt, provenance))


def export_figures(figures: Mapping[str, Any], directory: str | os.PathLike, format: str = "svg",
                   provenance: Mapping[str, Any] | None = None, width: int | None = None,
                   height: int | None = None, scale: float = 2, progress=None) -> dict[str, Path]:
    """Write several figures (name -> figure) into `directory` as <name>.<format>, one browser session.

    progress(done, total) is called after each figure is rendered.
    """
    fmt = format.lower()
    opts = _opts(fmt, width, height, scale)
    names = list(figures)
    rendered = render_figures([(figures[name], opts) for name in names], progress=progress)
    directory = Path(directory)
    return {name: _write(directory / f"{name}.{fmt}", embed_provenance(data, fmt, provenance))
            for name, data in zip(names, rendered)}


def _write(path: Path, data: bytes) -> Path:
    if path.parent != Path(""):
        path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
    return path


# ---------------------------------------------------------------------- provenance in files
def embed_provenance(data: bytes, format: str, provenance: Mapping[str, Any] | None) -> bytes:
    """The file bytes with the provenance JSON embedded (unchanged when provenance is None)."""
    if provenance is None:
        return bytes(data)
    text = _provenance_json(provenance)
    fmt = format.lower()
    if fmt == "svg":
        return _svg_with(data, text)
    if fmt == "pdf":
        return _pdf_with(data, text, provenance)
    if fmt == "png":
        return _png_with(data, text)
    raise ExportError(f"format must be one of {', '.join(FORMATS)}, got {format!r}.")


def _svg_with(data: bytes, text: str) -> bytes:
    svg = data.decode("utf-8")
    start = svg.find("<svg")
    end = svg.find(">", start) if start >= 0 else -1
    if end < 0:
        raise ExportError("kaleido returned something that is not an SVG document.")
    if svg[end - 1] == "/":  # an empty <svg/> (never from plotly, but keep it valid)
        svg = svg[:end - 1] + "></svg>" + svg[end + 1:]
    block = (f'<metadata id="{PROVENANCE_KEY}">{_xml_escape(text)}</metadata>'
             f"<!-- made with RMT Lens; provenance JSON in <metadata id=\"{PROVENANCE_KEY}\"> -->")
    return (svg[:end + 1] + block + svg[end + 1:]).encode("utf-8")


def _pdf_with(data: bytes, text: str, prov: Mapping[str, Any]) -> bytes:
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(data)))
    writer.add_metadata({
        PDF_KEY: text,
        "/Creator": f"RMT Lens {prov.get('rmt_lens_version', '')}".strip(),
        "/Subject": f"checkpoint {prov.get('checkpoint')} (weights {prov.get('weights_hash')})",
    })
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def _png_with(data: bytes, text: str) -> bytes:
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    image = Image.open(io.BytesIO(data))
    info = PngInfo()
    info.add_text(PROVENANCE_KEY, text)  # ASCII JSON -> a tEXt chunk
    info.add_text("Software", "RMT Lens")
    out = io.BytesIO()
    image.save(out, format="PNG", pnginfo=info, dpi=image.info.get("dpi", (144, 144)))
    return out.getvalue()


def read_provenance(path: str | os.PathLike) -> dict[str, Any] | None:
    """The provenance embedded in an exported SVG, PDF or PNG (None if there is none)."""
    path = Path(path)
    fmt = path.suffix.lower().lstrip(".")
    if fmt == "svg":
        import xml.etree.ElementTree as ET

        root = ET.parse(path).getroot()
        for element in root.iter("{http://www.w3.org/2000/svg}metadata"):
            if element.get("id") == PROVENANCE_KEY and element.text:
                return json.loads(element.text)
        return None
    if fmt == "pdf":
        from pypdf import PdfReader

        meta = PdfReader(str(path)).metadata or {}
        return json.loads(meta[PDF_KEY]) if PDF_KEY in meta else None
    if fmt == "png":
        from PIL import Image

        with Image.open(path) as image:
            text = getattr(image, "text", {}).get(PROVENANCE_KEY)
        return json.loads(text) if text else None
    raise ExportError(f"cannot read provenance from a .{fmt} file (svg, pdf or png).")


# ---------------------------------------------------------------------- tables
def table_csv(rows: Iterable[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    """Rows of dicts as CSV text (header = columns, default: keys in order of first appearance).

    Floats are written with full precision; None and NaN as empty cells; lists as JSON.
    """
    rows = list(rows)
    if columns is None:
        cols: list[str] = []
        for row in rows:
            cols.extend(k for k in row if k not in cols)
    else:
        cols = list(columns)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(cols)
    for row in rows:
        writer.writerow([_csv_cell(row.get(c)) for c in cols])
    return out.getvalue()


def _csv_cell(value: Any) -> str:
    if isinstance(value, np.generic):
        value = value.item()
    if value is None:
        return ""
    if isinstance(value, float):
        return "" if not np.isfinite(value) else repr(value)
    if isinstance(value, (list, tuple, dict, np.ndarray)):
        return json.dumps(to_jsonable(value))
    return str(value)


MASS_PAIRS = ("tokens->read", "write->tokens")  # the block pairs of segment_table, as "<A>_to_<B>_mass" columns


def _mass_column(pair: str) -> str:
    return pair.replace("->", "_to_") + "_mass"


# segment_table's columns and what they hold; the observables' words come from tracing/observables.py
SEGMENT_COLUMNS: dict[str, str] = {
    "segment": "segment index, from 0",
    "start": "the segment's first token (index in the document)",
    "end": "one past the segment's last token",
    "tokens": "number of tokens in the segment",
    "loss": BY_NAME["loss"].meaning,
    "perplexity": "exp(loss)",
    "memory_churn": "cosine distance between memory_in and memory_out, averaged over the slots",
    **{_mass_column(pair): f"block_attention {pair}: {block_pair_meaning(pair)} (mean over layers and heads)"
       for pair in MASS_PAIRS},
}
# An associative memory's columns instead of churn and slot masses (rows of observables.py, averaged)
ASSOCIATIVE_COLUMNS = {"state_norm": "layers", "z_norm": "layers", "write_strength": "layers and memory tokens",
                       "novelty": "layers and memory tokens", "overwrite": "layers and memory tokens",
                       "read_ratio": "layers and tokens"}
ASSOCIATIVE_SEGMENT_COLUMNS: dict[str, str] = {
    **{name: meaning for name, meaning in SEGMENT_COLUMNS.items() if name in ("segment", "start", "end", "tokens",
                                                                              "loss", "perplexity")},
    **{name: f"{BY_NAME[name].meaning} (mean over {over})" for name, over in ASSOCIATIVE_COLUMNS.items()}}


def segment_columns(trace) -> dict[str, str]:
    """segment_table's columns for this trace's memory type, with their meanings."""
    return ASSOCIATIVE_SEGMENT_COLUMNS if trace.memory_type == "associative" else SEGMENT_COLUMNS


def segment_table(trace) -> list[dict[str, Any]]:
    """One row per segment: token range, loss, perplexity, memory churn and read / write attention mass
    (an associative memory: its state size, write strength, novelty, overwrite and read ratio
    instead); columns and their meanings: segment_columns(trace)."""
    from ..explain import analysis

    if not trace.segments:
        return []
    if trace.memory_type == "associative":
        extra = [{name: float(np.mean(getattr(seg, name))) for name in ASSOCIATIVE_COLUMNS} for seg in trace.segments]
    else:
        churn = analysis.slot_churn(trace.memory_states(), reset=not trace.carries_memory).mean(axis=1)
        masses = {_mass_column(pair): analysis.block_mass(trace, pair) for pair in MASS_PAIRS}
        extra = [{"memory_churn": float(churn[s]), **{column: float(mass[s]) for column, mass in masses.items()}}
                 for s in range(trace.num_segments)]
    rows = []
    for s, seg in enumerate(trace.segments):
        loss = float(seg.loss)
        rows.append({
            "segment": s, "start": int(seg.start), "end": int(seg.end), "tokens": int(seg.num_tokens),
            "loss": loss, "perplexity": float(np.exp(loss)) if np.isfinite(loss) else float("nan"), **extra[s],
        })
    return rows
