"""Pre-flight checks, before anything is dumped or asked of the platform.

Each failure is one of the package's errors, naming the field to fix. They are repeated by
`dump_database` and `restore_database` right before they act (the world may have changed).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from odoo_upgrade.database.connection import ConnectionSettings
from odoo_upgrade.database.errors import (
    CLIENT_IMAGE_HINT,
    RESTORE_FIELDS,
    SOURCE_FIELDS,
    DatabaseFields,
    DatabasePermissionDenied,
    RestoreTargetExists,
)
from odoo_upgrade.database.server import DatabaseServer, ServerVersion, validate_database_name
from odoo_upgrade.database.tools import ClientTools, find_client_tools

RESTORE_MARKER_PREFIX = "odoo-upgrade restore "


def restore_marker(token: str) -> str:
    """The comment on a database restored for `token`: how a rerun recognises its own work."""
    return RESTORE_MARKER_PREFIX + hashlib.sha256(token.encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True)
class SourceCheck:
    """The source database answers, and pg_dump can dump it."""

    database: str
    server_version: str  # "15.18"
    client_version: str  # pg_dump's
    size_bytes: int  # pg_database_size
    data_bytes: int  # its tables' data: what the dump holds before compression


@dataclass(frozen=True)
class RestoreTargetCheck:
    """The restore target can be created (or was restored already for this token)."""

    database: str
    server_version: str
    client_version: str  # pg_restore's
    already_restored: bool


def check_source(
    settings: ConnectionSettings,
    database: str,
    *,
    tools: ClientTools | None = None,
    fields: DatabaseFields = SOURCE_FIELDS,
    hint: str = CLIENT_IMAGE_HINT,
) -> SourceCheck:
    """Connect to `database` with `settings`: reachable, credentials accepted, database present,
    pg_dump at least the server's major version."""
    validate_database_name(database, fields.name)
    tools = tools or find_client_tools(hint=hint)
    with DatabaseServer(settings, tools=tools, fields=fields) as server:
        facts = server.inspect(database)
    tools.require_supports("pg_dump", facts.version.text, server_of=fields.secret, hint=hint)
    return SourceCheck(
        database,
        facts.version.text,
        tools.tool_version("pg_dump"),
        facts.size_bytes,
        facts.data_bytes,
    )


@dataclass(frozen=True)
class RestoreFacts:
    version: ServerVersion
    already_restored: bool  # the target exists, restored for this token
    existing: dict[str, str | None]  # of the names asked about, those that exist: comment


def require_restorable(
    server: DatabaseServer,
    database: str,
    token: str | None,
    hint: str,
    *,
    also: tuple[str, ...] = (),
) -> RestoreFacts:
    """The checks of a restore target on an open server (and which of `also` exist)."""
    fields = server.fields
    version = server.version()
    for tool in ("pg_restore", "psql"):
        server.tools.require_supports(tool, version.text, server_of=fields.secret, hint=hint)
    existing = server.databases_named(database, *also)
    if database in existing:
        if token is not None and existing[database] == restore_marker(token):
            return RestoreFacts(version, True, existing)
        raise RestoreTargetExists(
            f"{fields.name}: database {database!r} exists already on the PostgreSQL server at "
            f"{server.settings.address}; a restore never drops or overwrites a database "
            "(choose another name, or drop it yourself)",
            field=fields.name,
        )
    if not server.can_create_databases():
        raise DatabasePermissionDenied(
            f"{fields.secret}: user {server.settings.user!r} may not create databases on the "
            f"PostgreSQL server at {server.settings.address} (it needs CREATEDB)",
            field=fields.secret,
        )
    return RestoreFacts(version, False, existing)


def check_restore_target(
    settings: ConnectionSettings,
    database: str,
    *,
    token: str | None = None,
    tools: ClientTools | None = None,
    fields: DatabaseFields = RESTORE_FIELDS,
    hint: str = CLIENT_IMAGE_HINT,
) -> RestoreTargetCheck:
    """The server answers, pg_restore/psql are new enough, `database` does not exist (or was
    restored for `token` already) and the role may create databases."""
    validate_database_name(database, fields.name)
    tools = tools or find_client_tools(hint=hint)
    with DatabaseServer(settings, tools=tools, fields=fields) as server:
        facts = require_restorable(server, database, token, hint)
    return RestoreTargetCheck(
        database, facts.version.text, tools.tool_version("pg_restore"), facts.already_restored
    )
