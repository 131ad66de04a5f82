"""Pure ASGI middleware: the request id and access log, request metrics, security headers,
the last-resort error guard, the sign-in rate limits, the body size and nesting limits.

Order (outermost first): :class:`RequestId` → :class:`RequestMetrics` →
:class:`SecurityHeaders` → :class:`ErrorGuard` → :class:`AuthThrottle` → :class:`BodyLimit` →
FastAPI's routing and exception handlers.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.logs import ACCESS_LOG, REQUEST_ID, request_id_of
from api.metrics import Metrics
from api.problems import InternalError, RequestTooLarge, TooManyRequests, ledger_error_response
from api.ratelimit import TokenBuckets, retry_after
from ledger.errors import LedgerError
from ledger.jsonsafe import check_depth

log = logging.getLogger("medtrail.api")
access_log = logging.getLogger(ACCESS_LOG)

#: The request id's header, read from the request and echoed in the response.
REQUEST_ID_HEADER = "X-Request-ID"


def _path(scope: Scope) -> str:
    return str(scope.get("path", ""))


class RequestId:
    """Gives every request an id and logs it once served.

    The id is the request's ``X-Request-ID`` when well-formed (:func:`api.logs.request_id_of`),
    else a new random one; it is echoed in the response's ``X-Request-ID``, set in
    :data:`api.logs.REQUEST_ID` for every log line of the request and for problem documents
    (``requestId``), and kept in ``scope["state"]["request_id"]``.

    The access log (``medtrail.access``, INFO) has one line per request: method, route
    template (never the path's values or the query: no record reference or patient address in
    the logs), status, duration and client address.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        header = next(
            (
                value.decode("latin-1")
                for name, value in scope.get("headers", ())
                if name == b"x-request-id"
            ),
            None,
        )
        request_id = request_id_of(header, uuid.uuid4().hex)
        scope.setdefault("state", {})["request_id"] = request_id
        token = REQUEST_ID.set(request_id)
        status = 500
        started = time.perf_counter()

        async def with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers = [
                    (name, value)
                    for name, value in message.get("headers", ())
                    if name.lower() != b"x-request-id"
                ]
                headers.append((b"x-request-id", request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, with_id)
        finally:
            if access_log.isEnabledFor(logging.INFO):
                route = getattr(scope.get("route"), "path", None) or (
                    f"{scope['root_path']}/…" if scope.get("root_path") else "unmatched"
                )  # a mounted app (the static assets) names its mount point
                method = str(scope.get("method", ""))
                millis = round((time.perf_counter() - started) * 1000, 1)
                client = _client(scope)
                access_log.info(
                    "%s %s %d %.1f ms %s",
                    method,
                    route,
                    status,
                    millis,
                    client,
                    extra={
                        "method": method,
                        "route": route,
                        "status": status,
                        "durationMs": millis,
                        "client": client,
                    },
                )
            REQUEST_ID.reset(token)


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


class SecurityHeaders:
    """Adds ``X-Content-Type-Options: nosniff`` to every response: a browser never guesses a
    type other than the one declared (a JSON answer echoing input is never run as HTML)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                if not any(name.lower() == b"x-content-type-options" for name, _ in headers):
                    headers.append((b"x-content-type-options", b"nosniff"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)


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


def _client(scope: Scope) -> str:
    """The client's address (after a trusted proxy's ``X-Forwarded-For``, which uvicorn
    applies for the addresses in ``FORWARDED_ALLOW_IPS``)."""
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


class AuthThrottle:
    """Rate limits per client address (:mod:`api.ratelimit`), answered with a 429
    ``rate-limited`` problem and ``Retry-After`` before the app sees the request:

    * ``GET /v1/auth/nonce``: each nonce issued takes a token of the client's ``nonces``
      bucket;
    * failures to authenticate take a token of its ``failures`` bucket: a sign-in
      (``POST /v1/auth/siwe``) refused with any 4xx, or a 401 to a request that carried an
      ``Authorization`` header. While that bucket is empty, the client's sign-ins and requests
      with credentials are refused (requests without credentials are not: they reveal
      nothing to guess)."""

    NONCE_PATH = "/v1/auth/nonce"
    SIGN_IN_PATH = "/v1/auth/siwe"

    def __init__(self, app: ASGIApp, nonces: TokenBuckets, failures: TokenBuckets) -> None:
        self.app = app
        self.nonces = nonces
        self.failures = failures

    async def _refuse(
        self, scope: Scope, receive: Receive, send: Send, wait: float, what: str
    ) -> None:
        seconds = retry_after(wait)
        error = TooManyRequests(
            f"too many {what} from this address: retry in {seconds} s", retryAfter=seconds
        )
        await ledger_error_response(error, _path(scope))(scope, receive, send)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        client, path = _client(scope), _path(scope)
        if path == self.NONCE_PATH:
            wait = self.nonces.take(client)
            if wait:
                await self._refuse(scope, receive, send, wait, "sign-in nonces")
                return
        sign_in = path == self.SIGN_IN_PATH
        guarded = sign_in or any(name == b"authorization" for name, _ in scope["headers"])
        if not guarded:
            await self.app(scope, receive, send)
            return
        wait = self.failures.wait(client)
        if wait:
            await self._refuse(scope, receive, send, wait, "failed sign-ins or authentications")
            return
        status = 0

        async def watching(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, watching)
        finally:
            if status == 401 or (sign_in and 400 <= status < 500):
                self.failures.charge(client)


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
