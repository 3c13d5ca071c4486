"""Offline bertviz views: no CDN, vendored JS inlined, truncation, and token escaping."""
from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import pytest

from rmt_core.viz.bertviz_views import (VENDOR_DIR, ViewHTML, head_view_html, memory_slot_counts, model_view_html,
                                    vendored_js)

EVIL_SCRIPT = "</script><script>alert(1)</script>"
EVIL_IMG = "<img src=x onerror=alert(1)>"
TOKENS = ["R0", "R1", "the", " cat", EVIL_SCRIPT, EVIL_IMG, "W0", "W1"]
VIEWS = [head_view_html, model_view_html]


def random_attention(layers: int = 2, heads: int = 2, n: int = 8, seed: int = 0) -> np.ndarray:
    """Random (layers, heads, n, n) attention with rows summing to 1."""
    a = np.random.default_rng(seed).random((layers, heads, n, n))
    return a / a.sum(-1, keepdims=True)


def assert_offline(html: str) -> None:
    assert not re.search(r"""\bsrc\s*=\s*["']?(?:https?:)?//""", html, re.IGNORECASE)
    assert not re.search(r"""paths\s*:\s*\{[^{}]*https?://""", html)
    for cdn in ("cdnjs", "code.jquery", "d3js.org/d3", "unpkg", "jsdelivr"):
        assert cdn not in html
    # bertviz's require.config block, the one with the CDN paths, is gone.
    assert not re.search(r"require\.config\(\s*\{\s*paths", html)
    assert "require.config CDN paths removed" in html


@pytest.mark.parametrize("view", VIEWS)
def test_view_is_a_standalone_offline_document(view):
    out = view(random_attention(), TOKENS)
    assert isinstance(out, ViewHTML)
    assert out.truncated is False and out.note is None and out.height > 100
    html = out.html
    assert html.startswith("<!DOCTYPE html>") and html.rstrip().endswith("</html>")
    assert_offline(html)
    # Vendored libraries are inlined: a known string from each.
    assert "// https://d3js.org v5.7.0" in html
    assert "jQuery v2.2.4" in html
    assert "@license RequireJS 2.3.6" in html
    assert "define(name, [], shims[name])" in html
    # bertviz's own code still drives the view.
    assert "requirejs(['jquery', 'd3']" in html
    assert '"root_div_id": "bertviz-' in html
    # bertviz copies the params into a JS comment too; that copy is dropped to halve the page.
    assert html.count('"attn"') == 1 and html.count('"root_div_id"') == 1


@pytest.mark.parametrize("view", VIEWS)
def test_malicious_tokens_cannot_escape_the_script(view):
    html = view(random_attention(), TOKENS).html
    assert EVIL_SCRIPT not in html
    assert "alert(1)</script>" not in html
    assert EVIL_IMG not in html and "<img" not in html
    assert "\\u003c/script\\u003e\\u003cscript\\u003ealert(1)\\u003c/script\\u003e" in html
    assert "\\u003cimg src=x onerror=alert(1)\\u003e" in html
    # Every </script> closes one of our own script elements: vendored d3, jquery, require.js, shims, bertviz.
    assert html.lower().count("</script") == 5


def test_ampersand_and_newline_tokens_are_encoded():
    html = head_view_html(random_attention(n=4), ["R0", "a&b", "\n", "W0"]).html
    assert '"a\\u0026b"' in html and '"\\\\n"' in html


def test_memory_slot_counts():
    assert memory_slot_counts(["R0", "R1", "x", "W0", "W1"]) == (2, 2)
    assert memory_slot_counts(["the", "R2", "W0"]) == (0, 1)
    assert memory_slot_counts(["R0", "W0"]) == (1, 1)
    assert memory_slot_counts(["a", "b"]) == (0, 0)


@pytest.mark.parametrize("view", VIEWS)
def test_truncation_keeps_memory_slots(view):
    m, n_text = 3, 20
    tokens = [f"R{k}" for k in range(m)] + [f"tok{i}" for i in range(n_text)] + [f"W{k}" for k in range(m)]
    out = view(random_attention(n=len(tokens)), tokens, max_tokens=10)
    assert out.truncated is True
    assert "10 of 26 positions" in out.note and "6 memory slots" in out.note
    assert "first 4 of 20 tokens" in out.note and "not renormalised" in out.note
    html = out.html
    for kept in ["R0", "R1", "R2", "tok0", "tok3", "W0", "W1", "W2"]:
        assert f'"{kept}"' in html
    assert '"tok4"' not in html and '"tok19"' not in html
    assert "not renormalised" in html  # the note is shown in the document too
    assert_offline(html)


def test_truncation_cuts_the_matrix_consistently():
    from rmt_core.viz.bertviz_views import _truncate

    tokens = ["R0", "a", "b", "c", "d", "W0"]
    att = random_attention(n=6)
    cut, labels, truncated, _ = _truncate(att, tokens, 4, None)
    assert truncated and labels == ["R0", "a", "b", "W0"]
    idx = [0, 1, 2, 5]
    np.testing.assert_array_equal(cut, att[:, :, idx][:, :, :, idx])
    # Explicit memory counts override label detection; memory wins over the cap.
    _, labels, _, note = _truncate(att, tokens, 2, (2, 1))
    assert labels == ["R0", "a", "W0"] and "first 0 of 3 tokens" in note


def test_no_truncation_at_the_cap():
    out = head_view_html(random_attention(n=8), TOKENS, max_tokens=8)
    assert out.truncated is False and out.note is None


def test_layer_and_head_options():
    att = random_attention(layers=3, heads=4)
    head = head_view_html(att, TOKENS, layer=2, heads=[1, 3]).html
    assert '"layer": 2' in head and '"heads": [1, 3]' in head
    model = model_view_html(att, TOKENS, layers=[0, 2], heads=[1], display_mode="dark").html
    assert '"include_layers": [0, 2]' in model and '"include_heads": [1]' in model
    assert '"display_mode": "dark"' in model


@pytest.mark.parametrize("kwargs", [dict(layer=2), dict(heads=[5]), dict(heads=[]), dict(max_tokens=0)])
def test_head_view_rejects_bad_options(kwargs):
    with pytest.raises(ValueError):
        head_view_html(random_attention(), TOKENS, **kwargs)


def test_bad_shapes_are_rejected():
    with pytest.raises(ValueError, match="shape"):
        head_view_html(np.zeros((2, 8, 8)), TOKENS)
    with pytest.raises(ValueError, match="labels"):
        model_view_html(random_attention(), TOKENS[:-1])
    with pytest.raises(ValueError, match="display_mode"):
        model_view_html(random_attention(), TOKENS, display_mode="blue")


def test_vendored_files_match_readme_hashes():
    readme = (VENDOR_DIR / "README.md").read_text()
    for name, fname in [("d3", "d3.min.js"), ("jquery", "jquery.min.js"), ("requirejs", "require.min.js")]:
        digest = hashlib.sha256((VENDOR_DIR / fname).read_bytes()).hexdigest()
        assert digest in readme, fname
        assert vendored_js(name)
    for lic in ("LICENSE.d3", "LICENSE.jquery", "LICENSE.requirejs"):
        assert (VENDOR_DIR / lic).stat().st_size > 500


CHROMIUM = Path("/usr/bin/chromium")


@pytest.mark.browser
@pytest.mark.skipif(not CHROMIUM.exists(), reason="no Chromium at /usr/bin/chromium")
@pytest.mark.parametrize("view", VIEWS)
def test_view_renders_offline_in_chromium(view, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    page_file = tmp_path / "view.html"
    page_file.write_text(view(random_attention(), TOKENS).html, encoding="utf-8")
    blocked: list[str] = []
    errors: list[str] = []
    dialogs: list[str] = []

    def only_local(route):
        url = route.request.url
        if url.startswith(("file:", "data:", "about:")):
            route.continue_()
        else:
            blocked.append(url)
            route.abort()

    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page()
            page.route("**/*", only_local)
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            page.goto(page_file.as_uri())
            page.wait_for_selector("#vis svg", timeout=15_000)
            assert page.locator("#vis svg text").count() > 0
        finally:
            browser.close()
    assert blocked == [] and errors == [] and dialogs == []
