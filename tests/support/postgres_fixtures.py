"""pytest fixtures around one real PostgreSQL server per test session.

Test modules load them with `pytest_plugins = ["tests.support.postgres_fixtures"]`. With
`ODOO_UPGRADE_POSTGRES_STATE=<dir>` the server `python -m tests.harness.postgres up
--state-dir <dir>` started is reused (and left running); otherwise one is started in a temp
dir and removed at the end of the session.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from odoo_upgrade.database import ConnectionSettings, settings_from_secret
from tests.harness.postgres import PostgresServer, load_recorded, temporary_postgres
from tests.support.odoo_db import OdooDatabase, create_odoo_database

STATE_ENV = "ODOO_UPGRADE_POSTGRES_STATE"
_names = itertools.count(1)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """The session's PostgreSQL server (roles `postgres` and `odoo`, password auth)."""
    recorded = os.environ.get(STATE_ENV)
    if recorded:
        server = load_recorded(Path(recorded))
        if server is None or not server.is_running():
            raise RuntimeError(f"{STATE_ENV}={recorded}: no running server recorded there")
        yield server
        return
    with temporary_postgres() as server:
        yield server


@pytest.fixture
def app_settings(postgres: PostgresServer) -> ConnectionSettings:
    """Connection settings of the app role, read from CloudNativePG-style Secret data."""
    return settings_from_secret(postgres.secret_data())


@pytest.fixture
def database_name() -> Callable[[str], str]:
    """`database_name("src")` -> a name unique in the session (tests share one server)."""

    def make(prefix: str) -> str:
        return f"{prefix}_{next(_names)}_{os.getpid() % 1000}"

    return make


@pytest.fixture
def odoo_database(
    postgres: PostgresServer, tmp_path: Path, database_name: Callable[[str], str]
) -> Iterator[OdooDatabase]:
    """A fresh Odoo-like database at series 16.0 (3000 partners, 300 attachments) with its
    filestore under tmp_path; it and every database named after it are dropped afterwards."""
    name = database_name("acme")
    database = create_odoo_database(postgres, name, tmp_path / "filestore" / name)
    yield database
    for other in postgres.databases():
        if other.startswith(name):
            postgres.drop_database(other)
