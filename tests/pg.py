"""PostgreSQL for the tests: the admin URL (``LIVENOTIFY_TEST_PG``) and a
database of its own per test (livenotify_test_<hex>), dropped after.

Without a server (or without psycopg) a test skips; with
``LIVENOTIFY_REQUIRE_SERVICES`` set (CI: .ci/run starts one) it fails instead.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

ADMIN_URL = os.environ.get("LIVENOTIFY_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


def admin() -> Any:
    """An autocommit connection to the admin database (skip or fail without one)."""
    psycopg = pytest.importorskip("psycopg")
    try:
        return psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=5)
    except psycopg.Error as exc:
        if os.environ.get("LIVENOTIFY_REQUIRE_SERVICES"):
            pytest.fail(f"no PostgreSQL at {ADMIN_URL}: {exc}")
        pytest.skip(f"no PostgreSQL at {ADMIN_URL}: {exc}")


@contextmanager
def fresh_database() -> Iterator[str]:
    """The URL of a new, uniquely named database, dropped on exit."""
    name = f"livenotify_test_{uuid.uuid4().hex}"
    with admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        with admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def rows(url: str, sql: str) -> list[tuple[Any, ...]]:
    """All rows ``sql`` returns in the database at ``url``."""
    import psycopg

    with psycopg.connect(url) as conn:
        return list(conn.execute(sql).fetchall())
