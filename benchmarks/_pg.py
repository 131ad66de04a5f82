"""Throwaway PostgreSQL databases: created on the configured server, dropped afterwards."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

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


@contextmanager
def throwaway_database(server_url: str) -> Iterator[str]:
    """Create ``medtrail_bench_<random>`` on the server of ``server_url``; drop it at the end."""
    url = make_url(server_url)
    name = f"medtrail_bench_{uuid.uuid4().hex[:12]}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
