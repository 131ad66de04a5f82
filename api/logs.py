"""Logging of the ``medtrail`` command and of every API process it starts.

One format for every line, text (the default) or JSON (``--log-format json``,
``MEDTRAIL_LOG_FORMAT=json``: one object a line, for a log collector); and, once the
settings are known, every line (uvicorn's and tracebacks included) is redacted
(:class:`~ledger.redact.Redactor`): chain and store errors repeat the RPC URL, whose path or
user-info may hold the node provider's key.

Every line logged while a request is served carries its **request id**
(:data:`REQUEST_ID`, set by :class:`api.middleware.RequestId`): ``requestId`` in JSON,
``[id]`` in text. The access log (logger ``medtrail.access``, one line per request) names
the route by its template (``/v1/records/{recordRef}/trail``), never the path's values nor
the query: record references and patients' addresses stay out of the logs.
"""

from __future__ import annotations

import json
import logging
import re
import time
from contextvars import ContextVar
from typing import Any, Final, Literal

from ledger.redact import Redactor, redactor_for
from ledger.settings import Settings

__all__ = [
    "ACCESS_LOG",
    "LOG_FORMAT",
    "REQUEST_ID",
    "JsonFormatter",
    "LogFormat",
    "TextFormatter",
    "current_request_id",
    "redact_logs",
    "request_id_of",
    "setup_logging",
]

#: Every text log line: time, level, logger, request id (``-`` outside a request), message.
LOG_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s"
#: The access log's logger: one INFO line per request served.
ACCESS_LOG: Final = "medtrail.access"

LogFormat = Literal["text", "json"]

#: The id of the request being served (None outside a request). Starlette runs the sync
#: routes in threads that copy the context, so their log lines carry it too.
REQUEST_ID: ContextVar[str | None] = ContextVar("medtrail_request_id", default=None)

#: An incoming ``X-Request-ID`` kept as it is: 1..128 characters of letters, digits and
#: ``._:-`` (a UUID, a trace id, a load balancer's id). Anything else is replaced, so that a
#: client cannot write what it likes into the logs.
_WELL_FORMED: Final = re.compile(r"[A-Za-z0-9._:\-]{1,128}")

#: Attributes every LogRecord has: what is left in ``record.__dict__`` are ``extra`` fields.
_STANDARD: Final = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "request_id",
    "color_message",
}


def request_id_of(header: str | None, new: str) -> str:
    """The request id of a request sending ``header`` as ``X-Request-ID``: the header if it is
    well-formed, else ``new`` (a generated id)."""
    if header is not None and _WELL_FORMED.fullmatch(header):
        return header
    return new


def current_request_id() -> str | None:
    """The id of the request being served, if any."""
    return REQUEST_ID.get()


def _install_record_factory() -> None:
    """Every log record made while a request is served gets its id (``request_id``), for
    whatever handler writes it (medtrail's, a test's ``caplog``, an embedding program's)."""
    previous = logging.getLogRecordFactory()
    if getattr(previous, "medtrail_request_id", False):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        request_id = REQUEST_ID.get()
        if request_id is not None:
            record.request_id = request_id
        return record

    factory.medtrail_request_id = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)


_install_record_factory()


class _RequestIdFilter(logging.Filter):
    """Puts the current request id on every record (``-`` outside a request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = REQUEST_ID.get() or "-"
        return True


class TextFormatter(logging.Formatter):
    """:data:`LOG_FORMAT`, redacted, with the access log's fields after the message."""

    def __init__(self, redactor: Redactor | None = None) -> None:
        super().__init__(LOG_FORMAT)
        self.redactor = redactor or Redactor()

    def format(self, record: logging.LogRecord) -> str:
        if not hasattr(record, "request_id"):
            record.request_id = REQUEST_ID.get() or "-"
        return self.redactor.text(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ``time`` (ISO 8601, UTC), ``level``, ``logger``, ``message``,
    ``requestId`` (inside a request), the record's ``extra`` fields (the access log's
    ``method``, ``route``, ``status``, ``durationMs``, ``client``), and ``exception`` (the
    traceback's text) — every string redacted."""

    def __init__(self, redactor: Redactor | None = None) -> None:
        super().__init__()
        self.redactor = redactor or Redactor()

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None) or REQUEST_ID.get()
        if request_id and request_id != "-":
            entry["requestId"] = request_id
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                entry.setdefault(key, value)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        redacted = self.redactor.value(entry)
        return json.dumps(redacted, default=str, ensure_ascii=False)


def _formatter(kind: LogFormat, redactor: Redactor | None = None) -> logging.Formatter:
    return JsonFormatter(redactor) if kind == "json" else TextFormatter(redactor)


def setup_logging(verbose: bool, log_format: LogFormat = "text") -> None:
    """Log to stderr: INFO and above with ``verbose``, else WARNING and above, in
    ``log_format``; every line carries the current request id."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING)
    for handler in logging.getLogger().handlers:
        handler.setFormatter(_formatter(log_format))
        if not any(isinstance(f, _RequestIdFilter) for f in handler.filters):
            handler.addFilter(_RequestIdFilter())


def redact_logs(settings: Settings, log_format: LogFormat | None = None) -> None:
    """From now on, no log line shows the settings' secrets; lines are in ``log_format``
    (default: the settings' ``MEDTRAIL_LOG_FORMAT``), and the access log is on unless
    ``MEDTRAIL_ACCESS_LOG`` is false."""
    formatter = _formatter(log_format or settings.log_format, redactor_for(settings))
    for handler in logging.getLogger().handlers:
        handler.setFormatter(formatter)
        if not any(isinstance(f, _RequestIdFilter) for f in handler.filters):
            handler.addFilter(_RequestIdFilter())
    access = logging.getLogger(ACCESS_LOG)
    access.setLevel(logging.INFO if settings.access_log else logging.WARNING)
