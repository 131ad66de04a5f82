"""A JSON-RPC gateway in front of a node, as hosted providers run them: it answers on any path
(``/v3/<api key>``) and with any user-info, forwarding each request to the node. Stop it to
make the chain unreachable at that URL."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx


@contextmanager
def gateway(node_url: str) -> Iterator[tuple[str, ThreadingHTTPServer]]:
    """Yield ``(base URL, server)``; ``server.shutdown()`` and ``server.server_close()`` take
    the endpoint down early."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            answer = httpx.post(
                node_url, content=body, headers={"Content-Type": "application/json"}, timeout=30
            )
            self.send_response(answer.status_code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer.content)))
            self.end_headers()
            self.wfile.write(answer.content)

        def log_message(self, *_args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", server
    finally:
        server.shutdown()
        server.server_close()
