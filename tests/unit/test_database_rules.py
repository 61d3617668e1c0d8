"""The database package's pure rules: versions, names, quoting, redaction."""

from __future__ import annotations

import pytest

from odoo_upgrade.database import (
    ConnectionSettings,
    PgMajor,
    client_supports_server,
    in_target_series,
    odoo_series,
    redact_password,
    settings_from_url,
    temporary_database_name,
)
from odoo_upgrade.database.connection import conninfo_dbname
from odoo_upgrade.database.versions import parse_tool_version, version_from_num


@pytest.mark.parametrize(
    ("num", "major", "text"),
    [(150018, "15", "15.18"), (170002, "17", "17.2"), (90624, "9.6", "9.6.24")],
)
def test_server_version_numbers_name_their_major(num: int, major: str, text: str) -> None:
    assert str(PgMajor.from_version_num(num)) == major
    assert version_from_num(num) == text
    assert PgMajor.parse(text) == PgMajor.from_version_num(num)


def test_a_client_reads_its_own_major_and_older_never_newer() -> None:
    assert client_supports_server(PgMajor.parse("15.18"), PgMajor.parse("15.2"))
    assert client_supports_server(PgMajor.parse("15.0"), PgMajor.parse("9.6.24"))
    assert not client_supports_server(PgMajor.parse("15.18"), PgMajor.parse("16.1"))
    assert not client_supports_server(PgMajor.parse("9.6.3"), PgMajor.parse("10.1"))


def test_tool_version_lines_are_parsed() -> None:
    assert parse_tool_version("pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)\n") == "15.18"
    assert parse_tool_version("pg_restore (PostgreSQL) 17beta1") == "17"
    with pytest.raises(ValueError):
        parse_tool_version("command not found")


@pytest.mark.parametrize(
    ("version", "series"),
    [
        ("16.0.1.3", "16.0"),
        ("saas~17.4.1.0", "saas~17.4"),
        ("18.0", "18.0"),
        ("", None),
        (None, None),
        ("1.3", "1.3"),
    ],
)
def test_odoo_series_of_module_versions(version: str | None, series: str | None) -> None:
    assert odoo_series(version) == series


def test_target_series_matches_only_its_own_versions() -> None:
    assert in_target_series("18.0.1.3", "18.0")
    assert in_target_series("saas~17.4.1.0", "saas~17.4")
    assert not in_target_series("18.01.1", "18.0")
    assert not in_target_series("17.4.1.0", "saas~17.4")
    assert not in_target_series(None, "18.0")


def test_temporary_names_are_deterministic_distinct_and_fit_63_bytes() -> None:
    name = temporary_database_name("acme_18", "uid-1")
    assert name == temporary_database_name("acme_18", "uid-1")
    assert name.startswith("acme_18__restoring_") and len(name) == len("acme_18__restoring_") + 8
    assert name != temporary_database_name("acme_18", "uid-2")
    long = temporary_database_name("é" * 40, "uid-1")
    assert len(long.encode()) <= 63 and "__restoring_" in long


def test_a_database_name_never_becomes_connection_options() -> None:
    assert conninfo_dbname("plain") == "dbname='plain'"
    assert conninfo_dbname("host=evil user='x'") == "dbname='host=evil user=\\'x\\''"


def test_passwords_are_masked_in_tool_messages_even_short_ones() -> None:
    settings = ConnectionSettings("db", 5432, "odoo", "p@ss")
    text = 'FATAL: password "p@ss" or p%40ss rejected'
    assert redact_password(text, settings) == 'FATAL: password "***" or *** rejected'
    assert "p@ss" not in repr(settings)


def test_urls_give_settings_and_database() -> None:
    settings, database = settings_from_url(
        "postgresql://odoo:s%3Acret@pg.example:6432/app?sslmode=require"
    )
    assert (settings.host, settings.port, settings.user) == ("pg.example", 6432, "odoo")
    assert settings.password == "s:cret" and settings.sslmode == "require" and database == "app"
    with pytest.raises(ValueError):
        settings_from_url("mysql://x@y/z")
