"""Logging of the ``medtrail`` command and of every API process it starts.

One format for every line; and, once the settings are known, every line (uvicorn's and
tracebacks included) goes through a :class:`~ledger.redact.RedactingFormatter`: chain and
store errors repeat the RPC URL, whose path or user-info may hold the node provider's key.
"""

from __future__ import annotations

import logging
from typing import Final

from ledger.redact import RedactingFormatter, redactor_for
from ledger.settings import Settings

__all__ = ["LOG_FORMAT", "redact_logs", "setup_logging"]

#: Every log line: time, level, logger, message.
LOG_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup_logging(verbose: bool) -> None:
    """Log to stderr: INFO and above with ``verbose``, else WARNING and above."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format=LOG_FORMAT)


def redact_logs(settings: Settings) -> None:
    """From now on, no log line shows the settings' secrets."""
    formatter = RedactingFormatter(redactor_for(settings), LOG_FORMAT)
    for handler in logging.getLogger().handlers:
        handler.setFormatter(formatter)
