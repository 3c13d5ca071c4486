"""Keep Streamlit's own address look-ups on the machine.

Streamlit works out the machine's "internal" address by connecting a UDP socket towards
8.8.8.8 and its "external" one by asking http://checkip.amazonaws.com (streamlit/net_util.py).
`.streamlit/config.toml`'s browser.serverAddress stops the look-ups at start-up; they are still
made whenever a WebSocket arrives from another origin (any web page the user visits can open
one to the app's port, and Streamlit asks again every time the external look-up fails). Here
both answer "no address" without a packet: an origin is then allowed only as localhost,
127.0.0.1, the configured browser.serverAddress or server.corsAllowedOrigins, as before.
"""
from __future__ import annotations


def _no_address() -> None:
    return None


def keep_lookups_local() -> None:
    """Replace streamlit.net_util's two look-ups (idempotent). Called by app/server.py (what
    `make app` serves) when Streamlit imports it at start, and by app/main.py when that is run
    directly (`streamlit run app/main.py`: from its first session on)."""
    from streamlit import net_util

    net_util.get_internal_ip = _no_address
    net_util.get_external_ip = _no_address
