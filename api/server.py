"""The HTTP server of ``medtrail serve``: uvicorn with the timeouts and bounds a service on a
hospital network needs.

uvicorn closes an idle keep-alive connection after ``timeout_keep_alive`` seconds, but has no
timeout for a request head that never completes (uvicorn issue #157,
``--timeout-request-start``, still open): a client that opens a connection and sends half a
request line — or one header byte a second, which re-arms the keep-alive timer each time —
holds the connection for ever, and 900 such clients held a server (issue 12). Nor does it
bound how many connections it holds (``limit_concurrency`` answers 503 only once a request
head has arrived). :class:`GuardedH11Protocol` adds both at the connection, where they
belong, before any ASGI code runs:

* a **header timeout**: a request head (request line and headers) must be complete within
  ``MEDTRAIL_HEADER_TIMEOUT`` seconds of its first byte — or of the connection, for the first
  request — else the connection is closed;
* a **connection bound**: a process holding ``MEDTRAIL_MAX_CONNECTIONS`` connections answers
  any further one with a 503 ``server-busy`` problem and closes it at once.

:class:`ServeConfig` carries them (and the keep-alive timeout) to uvicorn, in this process or,
with ``--workers N`` (rpc mode), in each worker process, where :func:`worker_app` opens the
ledger and builds the API.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import json
import logging
import os
import socket
from typing import Any, Final

import h11
import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.server import ServerState
from uvicorn.supervisors import Multiprocess

from api.logs import redact_logs, setup_logging
from ledger import gc_tuning
from ledger.settings import ConfigurationError, Settings

__all__ = [
    "GuardedH11Protocol",
    "ServeConfig",
    "listen",
    "run_single",
    "run_workers",
    "worker_app",
]

log = logging.getLogger("medtrail.server")

#: What a worker process's factory is, for uvicorn.
WORKER_APP: Final = "api.server:worker_app"


#: Seconds a worker process may take to answer its supervisor's health check: the check
#: starts as the process imports the service, which takes a few seconds on a busy host.
WORKER_HEALTHCHECK_TIMEOUT: Final = 60


@functools.cache
def busy_response(limit: int) -> bytes:
    """The raw HTTP/1.1 503 ``server-busy`` problem answered to a connection over the bound."""
    # Imported here: a worker process imports this module first, and must answer its
    # supervisor's health checks soon (api.problems brings in web3).
    from api.problems import PROBLEM_BASE, PROBLEM_MEDIA_TYPE, ServerBusy, catalogue

    kind = catalogue()[ServerBusy.code]
    body = json.dumps(
        {
            "type": PROBLEM_BASE + kind.code,
            "title": kind.title,
            "status": kind.status,
            "detail": f"the server holds its maximum of {limit} connections: retry shortly",
            "instance": "/",
            "code": kind.code,
            "limit": limit,
        }
    ).encode()
    head = (
        "HTTP/1.1 503 Service Unavailable\r\n"
        f"content-type: {PROBLEM_MEDIA_TYPE}\r\n"
        f"content-length: {len(body)}\r\n"
        "retry-after: 1\r\n"
        "x-content-type-options: nosniff\r\n"
        "connection: close\r\n\r\n"
    )
    return head.encode() + body


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a header timeout and a bound on connections (read from the
    :class:`ServeConfig`; a plain :class:`uvicorn.Config` gets neither)."""

    def __init__(
        self,
        config: uvicorn.Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.header_timeout: float | None = getattr(config, "header_timeout", None)
        self.max_connections: int | None = getattr(config, "max_connections", None)
        self._head_deadline: asyncio.TimerHandle | None = None
        self._refused = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if self.max_connections is not None and len(self.connections) >= self.max_connections:
            self._refused = True
            self.transport = transport
            transport.write(busy_response(self.max_connections))
            transport.close()
            log.warning("refused a connection: %d held already", len(self.connections))
            return
        super().connection_made(transport)
        self._watch_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._refused:
            return
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:  # (the transport is closing: nothing more is read)
            return
        super().data_received(data)
        self._watch_head()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # Idle between requests: the keep-alive timeout watches. Pipelined bytes of the next
        # head, already buffered, are watched from now.
        if self.conn.trailing_data[0]:
            self._watch_head()

    # -- the header timeout -------------------------------------------------------------

    def _watch_head(self) -> None:
        """Arm the deadline while a request head is awaited, disarm it once it is complete."""
        if self.header_timeout is None or self.transport.is_closing():
            return
        if self.conn.their_state is h11.IDLE:
            if self._head_deadline is None:
                self._head_deadline = self.loop.call_later(
                    self.header_timeout, self._head_timed_out
                )
        else:
            self._disarm()

    def _disarm(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _head_timed_out(self) -> None:
        self._head_deadline = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        log.info(
            "closed a connection from %s: no complete request head within %g s",
            self.client[0] if self.client else "?",
            self.header_timeout,
        )
        self._unset_keepalive_if_required()
        self.transport.close()


class ServeConfig(uvicorn.Config):
    """A uvicorn configuration from medtrail's settings: the guarded protocol, the header and
    keep-alive timeouts, the connection bound, the number of worker processes, and medtrail's
    logging (set up again in each worker process, which starts with none)."""

    def __init__(self, app: ASGIApp | str, settings: Settings, *, verbose: bool) -> None:
        # Read by GuardedH11Protocol and configure_logging (set before uvicorn's __init__,
        # which configures logging); plain values, so that the config pickles to workers.
        self.header_timeout = settings.header_timeout
        self.max_connections = settings.max_connections
        self.verbose = verbose
        super().__init__(
            app,
            host=settings.host,
            port=settings.port,
            http=GuardedH11Protocol,
            timeout_keep_alive=settings.keep_alive_timeout,
            workers=settings.workers,
            timeout_worker_healthcheck=WORKER_HEALTHCHECK_TIMEOUT,
            factory=isinstance(app, str),
            log_level="info" if verbose else "warning",
            log_config=None,  # uvicorn's loggers propagate to medtrail's redacting handler
            access_log=False,  # medtrail's own (api.middleware.RequestId) has the request id
        )

    def configure_logging(self) -> None:
        super().configure_logging()
        if not logging.getLogger().handlers:  # a worker process: nothing set up yet
            settings = Settings()
            setup_logging(self.verbose, settings.log_format)
            redact_logs(settings)


class _Served:
    """The API of a worker process, and its ledger's life: the anchor worker starts with the
    server (one process runs it at a time: a lease in the store) and the ledger closes when
    the server stops."""

    def __init__(self, app: ASGIApp, ledger: Any) -> None:
        self.app = app
        self.ledger = ledger

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.ledger.start_worker()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await asyncio.to_thread(self.ledger.close)
                await send({"type": "lifespan.shutdown.complete"})
                return


def tune_gc() -> None:
    """A serving process has started: :func:`ledger.gc_tuning.tune` (a batch of events then
    costs the collector far less)."""
    gc_tuning.tune()


def worker_app() -> ASGIApp:
    """A worker process's app (uvicorn calls this factory in each process): the ledger opened
    from the ``MEDTRAIL_*`` environment the parent exported, and the API over it."""
    from api.app import create_app
    from ledger.service import Ledger

    ledger = Ledger.open(Settings())
    served = _Served(create_app(ledger), ledger)
    tune_gc()
    return served


#: Connections the kernel queues before the server accepts them (uvicorn's default).
BACKLOG: Final = 2048


def listen(settings: Settings) -> socket.socket:
    """A socket listening on ``settings.host:settings.port``, made before anything else
    starts, so that a busy port is one clear :class:`ConfigurationError` (not a message that
    the service is serving, then a failure), and the port is the service's while the ledger
    opens. Bound as uvicorn binds (``SO_REUSEADDR``, inheritable by worker processes)."""
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    where = f"{settings.host}:{settings.port}"
    try:
        sock.bind((settings.host, settings.port))
        sock.listen(BACKLOG)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            reason = "the port is in use (another medtrail, or another program)"
        elif exc.errno in (errno.EACCES, errno.EPERM):
            reason = "permission denied (ports below 1024 need privileges)"
        elif exc.errno == errno.EADDRNOTAVAIL:
            reason = "no network interface of this machine has that address"
        else:
            reason = exc.strerror or str(exc)
        raise ConfigurationError(
            f"cannot listen on {where}: {reason}. Choose another with --port / MEDTRAIL_PORT "
            "(or --host / MEDTRAIL_HOST)"
        ) from exc
    except (socket.gaierror, OverflowError) as exc:
        sock.close()
        raise ConfigurationError(
            f"cannot listen on {where}: {settings.host!r} is not an address of this machine"
        ) from exc
    sock.set_inheritable(True)
    return sock


def run_single(
    app: ASGIApp, settings: Settings, *, verbose: bool, sock: socket.socket | None = None
) -> None:
    """Serve ``app`` in this process until interrupted (on ``sock``, from :func:`listen`, if
    given)."""
    server = uvicorn.Server(ServeConfig(app, settings, verbose=verbose))
    server.run(sockets=[sock] if sock is not None else None)


def run_workers(settings: Settings, *, verbose: bool, sock: socket.socket | None = None) -> None:
    """Serve with ``settings.workers`` processes sharing one listening socket (rpc mode:
    each opens its own ledger over the same store and chain). The settings the command line
    changed are exported first, so that every worker reads the same ones."""
    os.environ.update(
        {
            "MEDTRAIL_HOST": settings.host,
            "MEDTRAIL_PORT": str(settings.port),
            "MEDTRAIL_SIWE_DOMAIN": settings.siwe_domain,
            "MEDTRAIL_WORKERS": str(settings.workers),
            "MEDTRAIL_LOG_FORMAT": settings.log_format,
        }
    )
    config = ServeConfig(WORKER_APP, settings, verbose=verbose)
    Multiprocess(config, sockets=[sock if sock is not None else config.bind_socket()]).run()
