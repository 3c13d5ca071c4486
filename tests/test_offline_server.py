"""Nothing leaves the machine: the app's server, started as `make app` starts it, traced with strace.

The browser tests abort requests the *page* makes; this checks the *server process* and every
thread and child of it: each connect/sendto/sendmsg/sendmmsg system call during start-up, a page
load, the first screen's run, a page switch and a WebSocket from another origin must go to a
loopback address (DNS included: a look-up is a packet to the resolver's address). Streamlit's
headless start-up used to connect a UDP socket to 8.8.8.8 and ask DNS for checkip.amazonaws.com;
`.streamlit/config.toml`'s `browser.serverAddress` stops that, and app/server.py (what `make app`
serves: app/offline.py) stops the same look-ups Streamlit makes for a WebSocket from another
origin (any web page can open one). Negative controls show the same trace catches both when
those fixes are not there.

Needs Debian's strace (`make test` installs it) and Chromium; skipped LOUDLY without them.
"""
from __future__ import annotations

import ipaddress
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

pytest.importorskip("streamlit")

from browser_support import (  # noqa: E402,F401 - fixtures are used by name
    REPO, assert_offline, browser, goto_page, new_session, open_app, start_server,
)

pytestmark = pytest.mark.browser

SKIP = "OFFLINE TRACE SKIPPED: "
CALLS = "connect,sendto,sendmsg,sendmmsg"
ADDRESS = re.compile(r'inet_addr\("([^"]+)"\)|inet_pton\(AF_INET6?, "([^"]+)"')


def _strace() -> list[str]:
    """The strace command line, or a loud skip when strace is missing or may not trace here."""
    path = shutil.which("strace")
    if path is None:
        pytest.skip(SKIP + "strace is missing (install Debian's strace; `make test` does): "
                    "no check that the server sends nothing outside the machine was made.")
    probe = subprocess.run([path, "-f", "--seccomp-bpf", "-qq", "-e", "trace=connect", "-o", "/dev/null", "true"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(SKIP + f"strace cannot trace here ({probe.stderr.strip()[:200]}); "
                    "no check that the server sends nothing outside the machine was made.")
    return [path, "-f", "--seccomp-bpf", "-qq", "-e", f"trace={CALLS}"]


def outside_calls(log: str) -> list[str]:
    """The traced calls whose address is not a loopback one (IPv4, IPv6, IPv4-mapped IPv6)."""
    found = []
    for line in log.splitlines():
        if not any(f"{call}(" in line for call in CALLS.split(",")):
            continue
        for v4, v6 in ADDRESS.findall(line):
            address = ipaddress.ip_address(v4 or v6)
            mapped = getattr(address, "ipv4_mapped", None)
            if not (address.is_loopback or (mapped is not None and mapped.is_loopback)):
                found.append(line.strip())
    return found


def _websocket_from_another_origin(port: int) -> str:
    """Open the app's WebSocket as a page of another site would; the status line of the answer.
    (Streamlit checks such an origin against the machine's addresses, which it used to look up.)"""
    import socket

    request = (f"GET /_stcore/stream HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
               "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
               "Sec-WebSocket-Version: 13\r\nOrigin: http://evil.example\r\n\r\n")
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(request.encode())
        return sock.recv(4096).decode(errors="replace").splitlines()[0]


def test_the_detector_sees_a_connection_outside(tmp_path):
    """Negative control of the parser: a UDP connect to 8.8.8.8 is found; loopback ones are not."""
    log = tmp_path / "probe.txt"
    code = ("import socket\n"
            "for host in ('127.0.0.1', '8.8.8.8'):\n"
            "    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.connect((host, 1)); s.close()\n"
            "s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM); s.connect(('::1', 1)); s.close()\n")
    subprocess.run(_strace() + ["-o", str(log), sys.executable, "-c", code], check=True)
    found = outside_calls(log.read_text())
    assert len(found) == 1 and "8.8.8.8" in found[0], found


def test_streamlit_without_the_projects_config_looks_outside(tmp_path):
    """Negative control of the whole check: a bare `streamlit run` (no .streamlit/config.toml) does
    contact the outside at start-up, and the trace sees it."""
    script = tmp_path / "hello.py"
    script.write_text("import streamlit as st\nst.write('hello')\n")
    log, out = tmp_path / "strace.txt", tmp_path / "streamlit.txt"
    python = REPO / ".venv" / "bin" / "python"
    cmd = _strace() + ["-o", str(log), str(python if python.exists() else sys.executable), "-m", "streamlit", "run",
                       str(script), "--server.headless", "true", "--server.port", "0",
                       "--browser.gatherUsageStats", "false"]
    with open(out, "wb") as sink:
        process = subprocess.Popen(cmd, cwd=tmp_path, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while "URL:" not in out.read_text(errors="replace") and time.monotonic() < deadline:
            time.sleep(0.25)  # the URLs are printed after the look-ups
    finally:
        os.killpg(process.pid, signal.SIGTERM)  # strace and the server: its own process group
        process.wait(timeout=30)
    assert "URL:" in out.read_text(errors="replace"), out.read_text(errors="replace")[-2000:]
    assert outside_calls(log.read_text()), "the control should have seen Streamlit's look-up of the external IP"


def test_the_server_sends_nothing_outside_the_machine(browser, tmp_path):
    """Start-up as `make app` does it, a page load, the first screen's run, a page switch."""
    log = tmp_path / "strace.txt"
    server = start_server(tmp_path, prefix=_strace() + ["-o", str(log)], as_make_app=True)
    try:
        session = new_session(browser, server.url)
        try:
            open_app(session, server.url)  # waits until the demo is traced and charted
            goto_page(session.page, "Attention")
            assert_offline(session)
            assert _websocket_from_another_origin(server.port).startswith("HTTP/1.1 403")  # refused, asked no one
        finally:
            session.context.close()
    finally:
        server.stop()
    text = log.read_text()
    assert re.search(r"^\d+ +sendto\(", text, re.MULTILINE), "no traced call at all: the trace missed the server"
    assert "Did not auto detect external IP" not in server.log_tail(20_000)
    found = outside_calls(text)
    assert not found, "the server sent something outside the machine:\n" + "\n".join(found[:10])


def test_a_plain_streamlit_run_looked_outside_for_a_websocket_from_another_origin(browser, tmp_path):
    """Negative control of the WebSocket check: `streamlit run app/main.py` (not app/server.py),
    before any session has run it: a foreign origin made Streamlit look up addresses."""
    log = tmp_path / "strace.txt"
    server = start_server(tmp_path, prefix=_strace() + ["-o", str(log)], script="app/main.py")
    try:
        assert _websocket_from_another_origin(server.port).startswith("HTTP/1.1 403")
    finally:
        server.stop()
    assert outside_calls(log.read_text()), "the control should have seen Streamlit's look-ups for the origin check"
