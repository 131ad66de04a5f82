"""A real HTTP server on 127.0.0.1 that answers every request with the same bytes: a hostile
API or chain node, for clients that must refuse what it sends."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

#: A JSON bomb: nests deeper than any parser's stack (unclosed, as an attacker sends it).
BOMB = b"[" * 90_000


@contextmanager
def answering(body: bytes, status: int = 200) -> Iterator[str]:
    """Yield the base URL of a server answering ``status`` with ``body`` (JSON) to anything."""

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(length)
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _answer  # noqa: N815

        def log_message(self, *_args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
