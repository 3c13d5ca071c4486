"""The app as a server for many browsers: `streamlit run app/server.py` (what `make app` runs).

It serves app/main.py (st.App, Streamlit's ASGI app) with one addition: every page response
to a browser without it sets BROWSER_COOKIE, a random secret (HttpOnly: no script on the page
can read it; SameSite=Strict: never sent from another site). app/runs binds each session's
?doc= token to it, so the URL restores work only in the browser that made it. At start it
loads the default model and starts the server's one trace of the first screen's demo in the
background (warm_up), so the first visitors find it done or under way.
"""
from __future__ import annotations

import contextlib
import logging
import secrets
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `app` and `rmt_core` importable

from app.offline import keep_lookups_local  # noqa: E402

keep_lookups_local()  # before Streamlit prints its URLs or checks an origin (app/offline.py)

import streamlit as st  # noqa: E402
from starlette.middleware import Middleware  # noqa: E402

from app import settings  # noqa: E402
from app.runs import BROWSER_COOKIE  # noqa: E402


class BrowserCookie:
    """ASGI middleware: a browser's first HTML page response carries Set-Cookie BROWSER_COOKIE."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cookie = dict(scope.get("headers") or []).get(b"cookie", b"")
        if f"{BROWSER_COOKIE}=".encode() in cookie:
            await self.app(scope, receive, send)
            return
        max_age = int(settings.store_seconds())

        async def send_with_cookie(message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers") or [])
                if dict(headers).get(b"content-type", b"").startswith(b"text/html"):
                    value = (f"{BROWSER_COOKIE}={secrets.token_urlsafe(32)}; HttpOnly; SameSite=Strict; Path=/; "
                             f"Max-Age={max_age}")
                    message = dict(message, headers=headers + [(b"set-cookie", value.encode())])
            await send(message)

        await self.app(scope, receive, send_with_cookie)


def warm_up() -> None:
    """Load the default model and start the shared trace of the first screen's demo (app.runs)."""
    from app import runs, services

    try:
        model = services.load_model(services.default_checkpoint_name())
        runs.shared_demo_job(model, services.demo_document(services.DEMOS[0], model))
    except Exception:  # noqa: BLE001 - the first visitor then does it and sees any message
        logging.getLogger("rmt_lens.app").exception("warm-up failed")


@contextlib.asynccontextmanager
async def lifespan(_app):
    threading.Thread(target=warm_up, name="rmt-lens-warm-up", daemon=True).start()
    yield


app = st.App("main.py", middleware=[Middleware(BrowserCookie)], lifespan=lifespan)
