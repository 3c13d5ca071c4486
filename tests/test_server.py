"""The app as a shared server, without a browser: the run store (owners, memory, age), the run
queue, the browser cookie, the folders a browser may read checkpoints from, the settings."""
from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("streamlit")

from rmt_core import CheckpointError, ConfigError  # noqa: E402

from app import runs, services, settings  # noqa: E402


class _Doc:
    def __init__(self, text: str) -> None:
        self.text = text


def _saved(n_chars: int) -> runs.Saved:
    return runs.Saved(source="Paste text", document=_Doc("x" * n_chars))


# ---------------------------------------------------------------------- store
def test_an_entry_is_read_and_written_only_by_its_owner():
    store = runs.SessionStore(max_bytes=10**6, max_age_s=3600)
    mine = _saved(10)
    assert store.put("tok", "owner-a", mine)
    assert store.get("tok", "owner-a") is mine
    assert store.get("tok", "owner-b") is None and store.get("tok", None) is None
    assert not store.put("tok", "owner-b", _saved(20))  # another browser cannot overwrite it
    store.update("tok", "owner-b", trace="theirs", answer=None)
    assert store.get("tok", "owner-a") is mine and mine.trace is None


def test_the_store_is_bounded_by_memory_least_recently_used_first():
    store = runs.SessionStore(max_bytes=1000, max_age_s=3600)
    for i in range(5):
        store.put(f"t{i}", f"o{i}", _saved(300))  # 300 bytes each: three fit
    kept = [i for i in range(5) if store.get(f"t{i}", f"o{i}") is not None]
    assert kept == [2, 3, 4] and store.total_bytes() == 900
    store.get("t2", "o2")  # used again: now t3 is the oldest
    store.put("t5", "o5", _saved(300))
    assert store.get("t3", "o3") is None and store.get("t2", "o2") is not None
    store.put("big", "ob", _saved(5000))  # alone over the limit: the newest work is still kept
    assert store.get("big", "ob") is not None and len(store) == 1
    many = runs.SessionStore(max_bytes=10**6, max_age_s=3600)  # a count never evicts (the old limit was 32)
    for i in range(100):
        many.put(f"t{i}", f"o{i}", _saved(100))
    assert many.get("t0", "o0") is not None and len(many) == 100


def test_the_store_forgets_work_unused_for_longer_than_configured(monkeypatch):
    store = runs.SessionStore(max_bytes=10**6, max_age_s=60)
    now = [1000.0]
    monkeypatch.setattr(runs.time, "monotonic", lambda: now[0])
    store.put("old", "o", _saved(10))
    now[0] += 30
    assert store.get("old", "o") is not None  # a use resets the clock
    now[0] += 59
    assert store.get("old", "o") is not None
    now[0] += 61
    assert store.get("old", "o") is None


# ---------------------------------------------------------------------- queue
class _Job:
    def __init__(self) -> None:
        self.phase, self.queued, self.cancelled = "", 0, False


def test_the_queue_is_first_come_first_served_and_says_the_place():
    queue = runs.RunQueue(workers=1)
    first = _Job()
    assert queue.enter(first)
    jobs, order, threads = [_Job() for _ in range(3)], [], []
    for job in jobs:
        def work(job=job):
            if queue.enter(job):
                order.append(job)
                queue.leave()
        threads.append(threading.Thread(target=work))
        threads[-1].start()
        deadline = time.monotonic() + 10
        while not job.phase and time.monotonic() < deadline:  # it has joined the queue
            time.sleep(0.01)
    assert [j.queued for j in jobs] == [1, 2, 3]
    assert "3 runs ahead of this one (place 3 in the queue)" in jobs[2].phase
    jobs[1].cancelled = True  # leaves the queue without running
    queue.leave()
    for thread in threads:
        thread.join(10)
    assert order == [jobs[0], jobs[2]] and queue.counts() == (0, 0)


# ---------------------------------------------------------------------- cookie
def _respond(headers: list[tuple[bytes, bytes]], content_type: bytes) -> list[tuple[bytes, bytes]]:
    from app.server import BrowserCookie

    sent = []

    async def inner(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", content_type)]})

    async def send(message):
        sent.append(message)

    asyncio.run(BrowserCookie(inner)({"type": "http", "headers": headers}, None, send))
    return [v for k, v in sent[0]["headers"] if k == b"set-cookie"]


def test_the_server_gives_each_browser_an_httponly_secret():
    cookies = _respond([], b"text/html; charset=utf-8")
    assert len(cookies) == 1
    value = cookies[0].decode()
    assert value.startswith(f"{runs.BROWSER_COOKIE}=") and "HttpOnly" in value and "SameSite=Strict" in value
    assert len(value.split(";")[0].split("=", 1)[1]) >= 32
    assert _respond([], b"text/html") != cookies  # random per browser
    assert _respond([(b"cookie", f"{runs.BROWSER_COOKIE}=abc".encode())], b"text/html") == []  # kept
    assert _respond([], b"application/javascript") == []


# ---------------------------------------------------------------------- folders
def _checkpoint(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text('{"format": "rmt-lens"}')
    return folder


def test_typed_paths_stay_inside_the_allowed_folders(tmp_path, monkeypatch):
    allowed = _checkpoint(tmp_path / "allowed" / "model")
    outside = _checkpoint(tmp_path / "outside" / "model")
    (tmp_path / "allowed" / "link").symlink_to(outside)
    monkeypatch.setenv(settings.CHECKPOINT_DIRS, str(tmp_path / "allowed"))
    assert services.allowed_checkpoint(str(allowed)) == str(allowed.resolve())
    assert services.allowed_checkpoint(f"  {allowed}  ") == str(allowed.resolve())
    messages = set()
    for typed in (str(outside), str(tmp_path / "outside" / "nothing-here"), "/root/.ssh", "/etc",
                  f"{tmp_path / 'allowed'}/../outside/model", str(tmp_path / "allowed" / "link"),
                  "some-org/some-model", "austen-pydocs-recall", "", "~"):
        with pytest.raises(CheckpointError) as err:
            services.allowed_checkpoint(typed)
        messages.add(str(err.value))
    assert len(messages) == 1, messages  # one message: nothing tells an existing path from a missing one
    assert "allowed" in messages.pop() and "outside" not in str(err.value).replace(str(tmp_path / "allowed"), "")


def test_by_default_the_shipped_checkpoints_and_the_hub_cache_are_allowed(monkeypatch, tmp_path):
    from rmt_core.io.checkpoint import DEFAULT_CHECKPOINT, SHIPPED_DIR

    monkeypatch.delenv(settings.CHECKPOINT_DIRS, raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    assert settings.checkpoint_dirs() == [SHIPPED_DIR.resolve(), (tmp_path / "hub").resolve()]
    assert services.allowed_checkpoint(DEFAULT_CHECKPOINT) == str((SHIPPED_DIR / DEFAULT_CHECKPOINT).resolve())
    monkeypatch.chdir(SHIPPED_DIR.parent)  # a path relative to the server's folder
    assert services.allowed_checkpoint(f"checkpoints/{DEFAULT_CHECKPOINT}") == str(
        (SHIPPED_DIR / DEFAULT_CHECKPOINT).resolve())
    with pytest.raises(CheckpointError, match="local Hugging Face cache"):  # inside the cache: its own message
        services.allowed_checkpoint("some-org/not-cached")
    with pytest.raises(CheckpointError, match="folders the person who started it allowed"):
        services.allowed_checkpoint(str(Path.home()))


def test_pickles_only_where_the_operator_allowed_them(monkeypatch):
    monkeypatch.delenv(settings.ALLOW_PICKLE, raising=False)
    assert not settings.allow_pickle()
    monkeypatch.setenv(settings.ALLOW_PICKLE, "1")
    assert settings.allow_pickle()


@pytest.mark.parametrize("name", [settings.STORE_MB, settings.STORE_HOURS, settings.WORKERS])
def test_a_bad_setting_names_itself(monkeypatch, name):
    monkeypatch.setenv(name, "lots")
    reader = {settings.STORE_MB: settings.store_bytes, settings.STORE_HOURS: settings.store_seconds,
              settings.WORKERS: settings.workers}[name]
    with pytest.raises(ConfigError, match=name):
        reader()
    monkeypatch.setenv(name, "3")
    assert reader() > 0
