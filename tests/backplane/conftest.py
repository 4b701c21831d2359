"""Fixtures of the backplane tests (see :mod:`tests.backplane.services`)."""

from tests.backplane.services import pg_url, prefix

__all__ = ["pg_url", "prefix"]
