"""Helpers and fixtures for the real-browser tests (tests/test_browser.py).

* ``streamlit_server``: one `streamlit run app/server.py` (as `make app`) per test module, on a free port, killed at the end.
* ``browser``: the system Chromium (/usr/bin/chromium) through playwright; never downloads a browser.
* ``open_page``: a factory of pages, each in its own browser context (= its own Streamlit session)
  whose requests to anything but 127.0.0.1/localhost are aborted and recorded.

Every wait is a locator wait with a timeout; nothing sleeps.
"""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import pytest

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync"]
LOCAL_HOSTS = {"127.0.0.1", "localhost"}
SKIP_PREFIX = "BROWSER TESTS SKIPPED: "
STARTUP_TIMEOUT_S = 120
UPLOAD_LIMIT_BYTES = 200_000  # the test server's $RMT_LENS_MAX_UPLOAD_BYTES, so "too large" is quick to upload
ARTIFACTS = Path(os.environ.get("RMT_LENS_ARTIFACTS", REPO / "artifacts")) / "screenshots"

# Timeouts (ms). The machine is small and shared, so they are generous; the waits end as soon as the page is ready.
RUN_MS = 120_000  # a trace run (the first one also loads the model)
UI_MS = 30_000  # a widget reacting, a page switching

MAIN = '[data-testid="stMain"]'
SIDEBAR = '[data-testid="stSidebar"]'
CHART = '.js-plotly-plot .main-svg'
EXCEPTION = '[data-testid="stException"]'
ALERT = '[data-testid="stAlert"]'


# ---------------------------------------------------------------------- server
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _proc_tree_rss(pid: int) -> int:
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
            total += int(re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE).group(1)) * 1024
            for task in Path(f"/proc/{current}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, AttributeError, ValueError):
            pass
    return total


@dataclass
class StreamlitServer:
    port: int
    process: subprocess.Popen
    log_path: Path
    allowed_dir: Path | None = None  # RMT_LENS_CHECKPOINT_DIRS of the test server (with checkpoints/)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return "(no log)"

    def rss_bytes(self) -> int:
        """Resident memory of the server and all its children (psutil; /proc when psutil is missing)."""
        try:
            import psutil
        except ImportError:
            return _proc_tree_rss(self.process.pid)
        root = psutil.Process(self.process.pid)
        total = 0
        for proc in [root] + root.children(recursive=True):
            try:
                total += proc.memory_info().rss
            except psutil.Error:
                pass
        return total

    def stop(self) -> None:
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)  # its own process group (start_new_session)
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=15)
            except ProcessLookupError:
                pass


def _die_with_parent() -> None:
    """In the child: get SIGTERM if the test process dies without tearing down (Linux; a no-op elsewhere)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001 - best effort only
        pass


def start_server(log_dir: Path, extra_env: dict[str, str] | None = None, prefix: list[str] | None = None,
                 as_make_app: bool = False, script: str = "app/server.py") -> StreamlitServer:
    """`streamlit run app/server.py` (or `script`) on a free port. prefix: a command to run it under (e.g. strace);
    as_make_app: only the flags `make app` gives (no bind address, file watcher on), so the
    start-up is the one a user gets."""
    port = free_port()
    log_path = log_dir / f"streamlit-{port}.log"
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1", **(extra_env or {}))
    python = REPO / ".venv" / "bin" / "python"
    cmd = [str(python if python.exists() else sys.executable), "-m", "streamlit", "run", script,
           "--server.headless", "true", "--server.port", str(port)]  # the rest: .streamlit/config.toml
    if not as_make_app:
        cmd += ["--server.address", "127.0.0.1", "--server.fileWatcherType", "none"]
    cmd = list(prefix or []) + cmd
    log = open(log_path, "wb")
    process = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                               preexec_fn=_die_with_parent)
    log.close()
    server = StreamlitServer(port, process, log_path)
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    health = f"{server.url}/_stcore/health"
    while True:
        if process.poll() is not None:
            tail = server.log_tail()
            pytest.fail(f"streamlit exited with code {process.returncode} during startup. Log {log_path}:\n{tail}")
        try:
            with urllib.request.urlopen(health, timeout=2) as response:
                if response.status == 200 and response.read().strip() == b"ok":
                    return server
        except OSError:
            pass
        if time.monotonic() > deadline:
            server.stop()
            pytest.fail(f"streamlit did not answer {health} within {STARTUP_TIMEOUT_S} s. Log {log_path}:\n"
                        f"{server.log_tail()}")
        time.sleep(0.25)  # polling interval of the health check (not a wait on the page)


# ---------------------------------------------------------------------- browser
def launch_browser():
    """(playwright, browser); skips LOUDLY when playwright or Chromium is missing or cannot start."""
    if not Path(CHROMIUM).exists():
        pytest.skip(SKIP_PREFIX + f"{CHROMIUM} is missing (install Debian's chromium); "
                    "no real-browser check of the app was made.")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        pytest.skip(SKIP_PREFIX + f"playwright is not importable ({exc}); no real-browser check of the app was made.")
    manager = sync_playwright()
    pw = manager.start()
    try:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
    except Exception as exc:  # noqa: BLE001 - any launch failure means: skip, with the reason
        manager.__exit__(None, None, None)
        pytest.skip(SKIP_PREFIX + f"Chromium at {CHROMIUM} could not start ({type(exc).__name__}: "
                    f"{str(exc).strip().splitlines()[0] if str(exc).strip() else exc!r}); "
                    "no real-browser check of the app was made.")
    return manager, browser


@dataclass
class OfflineGuard:
    """Aborts and records every request that leaves the machine."""

    blocked: list[str] = field(default_factory=list)

    def handle(self, route) -> None:
        url = route.request.url
        parsed = urlparse(url)
        if parsed.scheme in ("http", "https", "ws", "wss") and parsed.hostname not in LOCAL_HOSTS:
            self.blocked.append(url)
            route.abort("blockedbyclient")
        else:
            route.continue_()


@dataclass
class Session:
    """One browser context (one Streamlit session) and what it recorded."""

    context: object
    page: object
    guard: OfflineGuard
    dialogs: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)


def new_session(browser, base_url: str) -> Session:
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, service_workers="block")
    guard = OfflineGuard()
    context.route("**/*", guard.handle)
    page = context.new_page()
    session = Session(context, page, guard)

    def on_dialog(dialog) -> None:
        session.dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()

    page.on("dialog", on_dialog)
    page.on("pageerror", lambda exc: session.page_errors.append(str(exc)))
    page.set_default_timeout(UI_MS)
    return session


# ---------------------------------------------------------------------- waiting on the app
def wait_idle(page, timeout: int = RUN_MS) -> None:
    """Until the app is connected and its script is not running."""
    page.wait_for_selector('[data-testid="stApp"][data-test-connection-state="CONNECTED"]', timeout=timeout)
    page.wait_for_selector('[data-testid="stApp"][data-test-script-state="notRunning"]', timeout=timeout)


def first_chart(page):
    return page.locator(f"{MAIN} {CHART}").first


def wait_first_screen(page, timeout: int = RUN_MS) -> None:
    """The first screen: the demo has been traced and the Overview charts are drawn."""
    from playwright.sync_api import expect

    expect(page.locator(MAIN).get_by_text("Question at the end")).to_be_visible(timeout=timeout)
    expect(first_chart(page)).to_be_visible(timeout=timeout)
    wait_idle(page, timeout)


def open_app(session: Session, base_url: str, wait: bool = True) -> None:
    session.page.goto(base_url, wait_until="domcontentloaded")
    if wait:
        wait_first_screen(session.page)


def app_pages() -> list[tuple[str, str]]:
    """(title, url_path) of every page app/main.py declares, in nav order."""
    source = (REPO / "app" / "main.py").read_text(encoding="utf-8")
    pages = []
    for call in re.findall(r"st\.Page\((.*?)\)\s*,?\s*$", source, flags=re.MULTILINE):
        title = re.search(r"title=\"([^\"]+)\"", call)
        url = re.search(r"url_path=\"([^\"]+)\"", call)
        if title:
            pages.append((title.group(1), url.group(1) if url else ""))
    return pages


def page_heading(page):
    """The text of the page's st.header (the first h2 of the main area)."""
    return page.locator(MAIN).locator("h2 [data-heading-text]").first


def goto_page(page, title: str) -> str:
    """Click a sidebar nav link; wait until the new page's heading is drawn and its run has ended.

    Returns the heading. Waiting for the heading to change first means the old page's elements,
    which stay on screen until the new run replaces them, are never mistaken for the new page's."""
    from playwright.sync_api import expect

    link = page.locator('[data-testid="stSidebarNavLink"]').filter(has=page.locator(f'span[label="{title}"]'))
    heading = page_heading(page)
    before = heading.text_content(timeout=UI_MS) if heading.count() else None
    current = link.get_attribute("aria-current") == "page"
    link.click()
    if before and not current:
        expect(heading).not_to_have_text(before, timeout=RUN_MS)
    expect(heading).to_be_visible(timeout=RUN_MS)
    expect(link).to_have_attribute("aria-current", "page")
    wait_idle(page)
    return heading.inner_text().strip()


def choose_source(page, label: str) -> None:
    page.locator(SIDEBAR).locator('[data-testid="stRadio"]').get_by_text(label, exact=True).click()
    wait_idle(page)


def run_button(page):
    """The sidebar's Run (a plain button for demos and uploads, the paste form's submit button for text)."""
    return page.locator(SIDEBAR).get_by_role("button", name="Run", exact=True).locator("visible=true")


def paste_text(page, text: str) -> None:
    """Choose 'Paste text' and type the text, as a user does (no blur, no Ctrl+Enter: the Run click sends it)."""
    from playwright.sync_api import expect

    choose_source(page, "Paste text")
    area = page.locator(SIDEBAR).locator('[data-testid="stTextArea"] textarea')
    area.fill(text)
    expect(run_button(page)).to_be_enabled(timeout=RUN_MS)


def upload(page, name: str, data: bytes, mime: str = "text/plain") -> None:
    """Choose 'Upload a file' and give the uploader a file; waits until the app has rerun with it."""
    from playwright.sync_api import expect

    choose_source(page, "Upload a file")
    page.locator(SIDEBAR).locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(
        {"name": name, "mimeType": mime, "buffer": data})
    expect(page.locator(SIDEBAR).locator('[data-testid="stFileUploader"]').get_by_text(name, exact=True)).to_be_visible()
    wait_idle(page)


def metric_value(page, label: str) -> str:
    metric = page.locator(MAIN).locator('[data-testid="stMetric"]', has_text=label)
    return metric.locator('[data-testid="stMetricValue"]').inner_text().strip()


def screenshot(page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")
    return path


def assert_offline(*sessions: Session) -> None:
    """No request left the machine, and no uncaught JavaScript error or dialog happened on the page."""
    blocked = [url for s in sessions for url in s.guard.blocked]
    assert not blocked, f"the page asked for something outside the machine (it must work offline): {blocked}"
    errors = [e for s in sessions for e in s.page_errors]
    assert not errors, f"uncaught JavaScript errors on the page: {errors[:5]}"
    dialogs = [d for s in sessions for d in s.dialogs]
    assert not dialogs, f"the page opened dialogs: {dialogs}"


# ---------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def browser():
    manager, browser = launch_browser()
    try:
        yield browser
    finally:
        browser.close()
        manager.__exit__(None, None, None)


@pytest.fixture(scope="module")
def streamlit_server(browser, tmp_path_factory):
    """Starts after the browser, so that a missing browser skips without starting a server."""
    allowed = tmp_path_factory.mktemp("allowed-checkpoints")  # what the tests' operator lets browsers read
    server = start_server(tmp_path_factory.mktemp("streamlit"),
                          {"RMT_LENS_MAX_UPLOAD_BYTES": str(UPLOAD_LIMIT_BYTES),
                           "RMT_LENS_CHECKPOINT_DIRS": os.pathsep.join([str(allowed), str(REPO / "checkpoints")])})
    server.allowed_dir = allowed
    print(f"streamlit at {server.url}, log {server.log_path}")
    try:
        yield server
    finally:
        server.stop()
        print(f"streamlit log {server.log_path}")


@pytest.fixture
def open_session(browser, streamlit_server):
    """Factory: a new browser context (a new Streamlit session) per call; all closed after the test."""
    sessions: list[Session] = []

    def make() -> Session:
        session = new_session(browser, streamlit_server.url)
        sessions.append(session)
        return session

    yield make
    for session in sessions:
        session.context.close()


@pytest.fixture
def fresh(open_session, streamlit_server) -> Session:
    """A new session showing the first screen (the demo, traced, charts drawn)."""
    session = open_session()
    open_app(session, streamlit_server.url)
    return session


@pytest.fixture(scope="module")
def local_model():
    """The default checkpoint loaded in this process, to compute what the page should show."""
    import torch

    import rmt_core

    torch.set_num_threads(1)
    return rmt_core.load(rmt_core.DEFAULT_CHECKPOINT)
