"""The embedded chain, read-only over JSON-RPC on 127.0.0.1: **for trying only**.

In the embedded mode the chain lives inside the service's process, so a regulator's tools,
which read the chain through a JSON-RPC endpoint of their own, would have nothing to read.
:class:`TrialRpcServer` lets a newcomer try them against ``make run``: it answers, on a
loopback port, the read methods the tools send — :data:`READ_METHODS`, single or in batches —
from the in-process chain (:class:`ledger.chain.embedded.EmbeddedNode`, under the chain's
lock), and refuses every other method with a JSON-RPC error (``-32601``): nothing can be
written through it.

It is no substitute for a node of one's own: the chain it serves is the operator's, in the
operator's process, and dies with it. A regulator trusts only a chain they reach themselves
(a consortium node, an L2); the embedded mode is for trying medtrail out.
"""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final

from ledger.chain.embedded import EmbeddedNode, LockedEthereumTesterProvider

__all__ = ["MAX_BATCH", "MAX_BODY", "READ_METHODS", "TrialRpcServer", "answer"]

log = logging.getLogger("medtrail.trial_rpc")

#: What the endpoint answers: the reads of :class:`ledger.chain.reader.ChainReader`.
READ_METHODS: Final = frozenset(
    {
        "eth_chainId",
        "eth_blockNumber",
        "eth_getBlockByNumber",
        "eth_call",
        "eth_getCode",
        "eth_getLogs",
    }
)
#: Largest request body (bytes) and batch (requests) answered.
MAX_BODY: Final = 4 * 1024 * 1024
MAX_BATCH: Final = 1000

#: The start-up message's and the docs' label.
LABEL: Final = "for trying only: read-only, loopback, the operator's own in-process chain"


def _error(request_id: Any, code: int, message: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "error": {"code": code, "message": message}}


def _refusal(request: Any) -> dict[str, Any] | None:
    """The error answering ``request`` without asking the chain, or None to ask it."""
    if not isinstance(request, dict):
        return _error(None, -32600, "invalid request: not a JSON-RPC request object")
    request_id = request.get("id")
    method = request.get("method")
    if not isinstance(method, str):
        return _error(request_id, -32600, "invalid request: no method")
    if method not in READ_METHODS:
        return _error(
            request_id,
            -32601,
            f"method {method[:64]!r} is not served: this endpoint is read-only "
            f"({', '.join(sorted(READ_METHODS))}), {LABEL}",
        )
    if not isinstance(request.get("params", []), list):
        return _error(request_id, -32602, "invalid params: params must be an array")
    return None


def answer(node: EmbeddedNode, lock: Any, payload: Any) -> Any:
    """The answer to a decoded JSON-RPC ``payload`` (a request or a batch): the read methods
    asked of ``node`` under ``lock``, everything else refused."""

    def one(request: Any) -> dict[str, Any]:
        refused = _refusal(request)
        if refused is not None:
            return refused
        with lock:
            result: dict[str, Any] = node({**request, "params": request.get("params", [])})
        return result

    if isinstance(payload, list):
        if not payload:
            return _error(None, -32600, "invalid request: an empty batch")
        if len(payload) > MAX_BATCH:
            return _error(None, -32600, f"invalid request: batches hold at most {MAX_BATCH}")
        return [one(request) for request in payload]
    return one(payload)


class TrialRpcServer:
    """The read-only JSON-RPC endpoint of an embedded chain, on ``127.0.0.1:port`` (0: a free
    port), served by a daemon thread from :meth:`start` to :meth:`close`.

    :raises OSError: the port cannot be bound (from the constructor).
    """

    def __init__(self, provider: LockedEthereumTesterProvider, port: int = 0) -> None:
        node = EmbeddedNode(provider)
        lock = provider.lock

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _send(self, status: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                # Readable by the patient's page (another origin: the service's port). It
                # only ever answers reads of a public chain, so any page may read it.
                self.send_header("Access-Control-Allow-Origin", "*")
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                try:
                    length = int(self.headers.get("Content-Length") or -1)
                except ValueError:
                    length = -1
                if not 0 <= length <= MAX_BODY:
                    self.close_connection = True
                    self._send(413, _error(None, -32600, f"a body of 0..{MAX_BODY} bytes"))
                    return
                try:
                    payload = json.loads(self.rfile.read(length))
                except (ValueError, UnicodeDecodeError):
                    self._send(200, _error(None, -32700, "parse error: the body is not JSON"))
                    return
                try:
                    self._send(200, answer(node, lock, payload))
                except Exception:  # a bug of ours: the service goes on
                    log.exception("the trial JSON-RPC endpoint failed to answer")
                    self._send(500, _error(None, -32603, "internal error"))

            def do_GET(self) -> None:
                self.close_connection = True
                self._send(
                    405,
                    _error(None, -32600, f"send JSON-RPC requests with POST ({LABEL})"),
                )

            def log_message(self, *_args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> TrialRpcServer:
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="medtrail-trial-rpc", daemon=True
        )
        self._thread.start()
        return self

    def close(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> TrialRpcServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
