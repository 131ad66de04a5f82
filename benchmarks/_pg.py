"""Throwaway PostgreSQL databases: created on the configured server, dropped afterwards
(the test suite's own helper, under another name)."""

from __future__ import annotations

from contextlib import AbstractContextManager

from sqlalchemy import create_engine, text
from sqlalchemy.exc import SQLAlchemyError

from tests.support import postgres as test_databases

#: Where the benchmarks create their databases unless told otherwise.
DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def reachable(url: str) -> str | None:
    """None if the server answers, else why not."""
    engine = create_engine(url, connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        return None
    except SQLAlchemyError as exc:
        return str(exc.orig if hasattr(exc, "orig") else exc).splitlines()[0]
    finally:
        engine.dispose()


def throwaway_database(server_url: str) -> AbstractContextManager[str]:
    """``medtrail_bench_<random>`` on the server of ``server_url``, dropped at the end."""
    return test_databases.throwaway_database(server_url, prefix="medtrail_bench")
