"""Shared helpers of the dashboard's browser test and benchmark: the real app served by uvicorn in
a thread on a free loopback port, and Debian's Chromium (``/usr/bin/chromium``, never
Playwright's own download) launched headless through Playwright.

Imported by ``tests/test_dashboard_browser.py`` (``tests/`` is on ``sys.path`` under pytest) and
by ``bench/dashboard_bench.py`` (which puts ``tests/`` on ``sys.path`` itself).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
# no sandbox in containers, software GL, and none of Chromium's own background traffic (updates,
# sync, QUIC probes), so that every request a page makes is the page's own
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]


def free_port() -> int:
    """A TCP port free on loopback now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serve(app, *, timeout_s: float = 30.0) -> Iterator[str]:
    """Run the ASGI ``app`` with uvicorn in a daemon thread on a free loopback port; yield its
    base URL (``http://127.0.0.1:<port>``) and stop the server on exit."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def launch_chromium(playwright):
    """Debian's Chromium, headless, through a started ``sync_playwright()`` object."""
    return playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                      args=CHROMIUM_ARGS)
