"""Fresh PostgreSQL databases for tests (never a developer's own database).

``MEDTRAIL_TEST_POSTGRES_URL`` names a server and a database the tests may connect to (CI:
``postgresql+psycopg://postgres@127.0.0.1:5432/test``); each test gets its own database,
created on that server and dropped afterwards.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

ENV = "MEDTRAIL_TEST_POSTGRES_URL"
SKIP_REASON = (
    f"PostgreSQL not configured: set {ENV} (e.g. postgresql+psycopg://postgres@127.0.0.1:5432/test)"
)


def postgres_url() -> str | None:
    return os.environ.get(ENV) or None


@contextmanager
def fresh_database() -> Iterator[str]:
    """Create an empty database, yield its URL, drop it afterwards."""
    base = postgres_url()
    if base is None:
        pytest.skip(SKIP_REASON)
    with throwaway_database(base) as url:
        yield url


@contextmanager
def throwaway_database(server_url: str, prefix: str = "medtrail_test") -> Iterator[str]:
    """Create ``<prefix>_<random>`` on the server of ``server_url``; drop it at the end (the
    benchmarks use it too)."""
    url = make_url(server_url)
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
