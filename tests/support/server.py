"""Serve a Ledger's API with uvicorn on 127.0.0.1 in a background thread, for clients that
need a real HTTP endpoint (examples, scripts run as subprocesses)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn

from api.app import bootstrap_admin_key, create_app
from ledger.service import Ledger


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serving(ledger: Ledger, *, worker: bool = True) -> Iterator[tuple[str, str]]:
    """Yield ``(base_url, regulator_key)``; stops the server (and worker) on exit."""
    key = bootstrap_admin_key(ledger)
    app = create_app(ledger, admin_key=key)
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    if worker:
        ledger.start_worker(poll=0.1)
    try:
        yield f"http://127.0.0.1:{port}", key
    finally:
        ledger.stop_worker()
        server.should_exit = True
        thread.join(timeout=20)
