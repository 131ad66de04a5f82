"""Pure ASGI middleware: request metrics, the last-resort error guard, the body size and
nesting limits.

Order (outermost first): :class:`RequestMetrics` → :class:`ErrorGuard` → :class:`BodyLimit`
→ FastAPI's routing and exception handlers.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.metrics import Metrics
from api.problems import InternalError, RequestTooLarge, ledger_error_response
from ledger.errors import LedgerError
from ledger.jsonsafe import check_depth

log = logging.getLogger("medtrail.api")


def _path(scope: Scope) -> str:
    return str(scope.get("path", ""))


class RequestMetrics:
    """Counts requests and times them by route template (``unmatched`` when no route)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        started = time.perf_counter()

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = scope.get("route")
            template = str(getattr(route, "path", "unmatched"))
            method = str(scope.get("method", ""))
            self.metrics.requests.labels(method, template, str(status)).inc()
            self.metrics.request_seconds.labels(method, template).observe(
                time.perf_counter() - started
            )


class ErrorGuard:
    """Turns any exception that escaped the exception handlers into a logged 500 problem
    without details (no traceback ever reaches the client)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:
            log.exception("unhandled error on %s %s", scope.get("method"), _path(scope))
            if started:
                raise
            response = ledger_error_response(
                InternalError("an unexpected error occurred; it was logged"), _path(scope)
            )
            await response(scope, receive, send)


class BodyLimit:
    """Refuses request bodies over ``max_bytes`` with a 413 problem, without reading more than
    ``max_bytes + 1`` bytes: a declared ``Content-Length`` over the limit is refused at once,
    a streamed body as soon as it passes the limit. The accepted body is replayed to the app.

    Every body is also scanned for its JSON nesting depth (:func:`ledger.jsonsafe.check_depth`;
    the API takes no other kind of body) and refused with a 422 ``json-too-deep`` problem if
    it nests deeper than ``max_depth``, before anything parses it."""

    def __init__(self, app: ASGIApp, max_bytes: int, max_depth: int) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_depth = max_depth

    def _too_large(self, scope: Scope) -> Any:
        return ledger_error_response(
            RequestTooLarge(
                f"the request body is larger than {self.max_bytes} bytes", limit=self.max_bytes
            ),
            _path(scope),
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared > self.max_bytes:
                    await self._too_large(scope)(scope, receive, send)
                    return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._too_large(scope)(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        try:
            check_depth(body, self.max_depth)
        except LedgerError as exc:
            await ledger_error_response(exc, _path(scope))(scope, receive, send)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)
