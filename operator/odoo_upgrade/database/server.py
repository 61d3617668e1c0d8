"""One PostgreSQL server reached with given settings: queries through psql, failures classified.

Queries go to psql on stdin (never on its command line); names are quoted here, literals too
(`standard_conforming_strings` is on since PostgreSQL 9.1). libpq's messages are redacted and
sorted into the package's errors: unreachable (transient), authentication, not found, ...
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType

from odoo_upgrade.database.child import libpq_message
from odoo_upgrade.database.connection import (
    ConnectionSettings,
    conninfo_dbname,
    libpq_environment,
    redact_password,
)
from odoo_upgrade.database.errors import (
    SOURCE_FIELDS,
    DatabaseAuthenticationFailed,
    DatabaseCommandFailed,
    DatabaseConnectionFailed,
    DatabaseError,
    DatabaseFields,
    DatabaseNameInvalid,
    DatabaseNotFound,
    DatabasePermissionDenied,
    DatabaseUnreachable,
)
from odoo_upgrade.database.tools import ClientTools, find_client_tools
from odoo_upgrade.database.versions import PgMajor, version_from_num

MAX_NAME_BYTES = 63  # NAMEDATALEN - 1
QUERY_TIMEOUT_SECONDS = 600.0
MAINTENANCE_DATABASES = ("postgres", "template1")
FIELD_SEPARATOR = "\x1f"
RECORD_SEPARATOR = "\x1e"

_NOT_FOUND = re.compile(r'database "((?:[^"]|"")*)" does not exist')
_AUTHENTICATION = (
    "password authentication failed",
    "no password supplied",
    "authentication failed",
    "no pg_hba.conf entry",
    "pg_hba.conf rejects",
    "password is required",
    "does not exist",  # role "x" does not exist (databases are matched before)
)
_PERMISSION = ("permission denied", "must be owner")
_UNREACHABLE = (
    "connection refused",
    "could not connect",
    "could not translate host name",
    "name or service not known",
    "temporary failure in name resolution",
    "timeout expired",
    "timed out",
    "no route to host",
    "network is unreachable",
    "the database system is starting up",
    "the database system is shutting down",
    "the database system is in recovery mode",
    "too many clients",
    "remaining connection slots are reserved",
    "server closed the connection unexpectedly",
    "connection to server was lost",
    "could not receive data from server",
    "could not send data to server",
    "terminating connection due to administrator command",
)


def quote_identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def quote_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def validate_database_name(name: str, field_name: str) -> None:
    """A name PostgreSQL keeps as given: 1-63 bytes, no NUL."""
    size = len(name.encode("utf-8"))
    if not name or size > MAX_NAME_BYTES or "\x00" in name:
        raise DatabaseNameInvalid(
            f"{field_name}: {name[:80]!r} is not a usable database name "
            f"(1 to {MAX_NAME_BYTES} bytes, got {size})",
            field=field_name,
        )


@dataclass(frozen=True)
class ServerVersion:
    number: int  # server_version_num: 150018
    text: str  # "15.18"

    @classmethod
    def from_num(cls, number: int) -> ServerVersion:
        return cls(number, version_from_num(number))

    @property
    def major(self) -> PgMajor:
        return PgMajor.from_version_num(self.number)


@dataclass(frozen=True)
class DatabaseFacts:
    version: ServerVersion
    size_bytes: int  # pg_database_size
    data_bytes: int  # its tables' data (with TOAST, without indexes): a dump's raw content


_VERSION_SQL = "SELECT current_setting('server_version_num');"
_TABLE_DATA_SQL = (
    "SELECT coalesce(sum(pg_table_size(c.oid)), 0) FROM pg_class c "
    "JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE c.relkind IN ('r', 'm') AND n.nspname <> 'information_schema' "
    "AND n.nspname NOT LIKE 'pg\\_%'"
)


def classify_failure(
    stderr: str,
    *,
    settings: ConnectionSettings,
    database: str,
    fields: DatabaseFields,
    doing: str,
    named_database: bool = True,
) -> DatabaseError:
    """The error a tool's stderr describes. `named_database`: `database` is the spec's name
    (not a maintenance database), so "does not exist" is the user's `DatabaseNotFound`."""
    message = redact_password(libpq_message(stderr), settings)
    lowered = message.lower()
    where = f"the PostgreSQL server at {settings.address}"
    at_connect = any(mark in lowered for mark in ("fatal", "fe_sendauth", "connection to server"))
    missing = _NOT_FOUND.search(message)
    if missing and at_connect:
        if named_database:
            return DatabaseNotFound(
                f"{fields.name}: database {database!r} does not exist on {where}",
                field=fields.name,
            )
        return DatabaseConnectionFailed(
            f"{fields.secret}: {where} has no database {database!r} to connect to ({message})",
            field=fields.secret,
        )
    if at_connect and any(mark in lowered for mark in _AUTHENTICATION):
        return DatabaseAuthenticationFailed(
            f"{fields.secret}: {where} refused user {settings.user!r}: {message}",
            field=fields.secret,
        )
    if any(mark in lowered for mark in _PERMISSION):
        return DatabasePermissionDenied(
            f"{fields.secret}: user {settings.user!r} lacks a privilege on {where} "
            f"({doing}): {message}",
            field=fields.secret,
        )
    if any(mark in lowered for mark in _UNREACHABLE):
        return DatabaseUnreachable(
            f"{fields.secret}: cannot reach {where} ({message}); retrying may help",
            field=fields.secret,
        )
    if at_connect:
        return DatabaseConnectionFailed(
            f"{fields.secret}: connecting to {where} failed: {message}", field=fields.secret
        )
    return DatabaseCommandFailed(f"{doing} on {where} failed: {message}", field=fields.secret)


class DatabaseServer:
    """A context manager holding the libpq environment (password file) for its lifetime."""

    def __init__(
        self,
        settings: ConnectionSettings,
        *,
        tools: ClientTools | None = None,
        fields: DatabaseFields = SOURCE_FIELDS,
    ) -> None:
        self.settings = settings
        self.tools = tools or find_client_tools()
        self.fields = fields
        self._context = libpq_environment(settings)
        self._env: dict[str, str] | None = None
        self._maintenance: str | None = None
        self._version: ServerVersion | None = None

    def __enter__(self) -> DatabaseServer:
        self._env = self._context.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._context.__exit__(exc_type, exc, tb)
        self._env = None

    @property
    def env(self) -> dict[str, str]:
        if self._env is None:
            raise RuntimeError("DatabaseServer used outside its `with` block")
        return self._env

    def fail(self, stderr: str, database: str, doing: str, *, named: bool) -> DatabaseError:
        return classify_failure(
            stderr,
            settings=self.settings,
            database=database,
            fields=self.fields,
            doing=doing,
            named_database=named,
        )

    # -- queries -------------------------------------------------------------------------

    def query(
        self, sql: str, database: str, *, named: bool = True, doing: str = "a query"
    ) -> list[list[str]]:
        """Run `sql` in `database`; rows of text fields (NULL is '')."""
        args = [
            self.tools.path("psql"),
            "--no-psqlrc",
            "--no-password",
            "--quiet",
            "--no-align",
            "--tuples-only",
            f"--field-separator={FIELD_SEPARATOR}",
            f"--record-separator={RECORD_SEPARATOR}",
            "--set=ON_ERROR_STOP=1",
            f"--dbname={conninfo_dbname(database)}",
            "--file=-",
        ]
        try:
            completed = subprocess.run(
                args,
                input=sql.encode("utf-8"),
                capture_output=True,
                env=self.env,
                timeout=QUERY_TIMEOUT_SECONDS,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise DatabaseUnreachable(
                f"{self.fields.secret}: {doing} on the PostgreSQL server at "
                f"{self.settings.address} got no answer within {QUERY_TIMEOUT_SECONDS:.0f} s",
                field=self.fields.secret,
            ) from None
        if completed.returncode != 0:
            stderr = completed.stderr.decode("utf-8", "replace")
            raise self.fail(stderr, database, doing, named=named)
        text = completed.stdout.decode("utf-8", "replace")
        text = text[:-1] if text.endswith("\n") else text
        if not text:
            return []
        return [record.split(FIELD_SEPARATOR) for record in text.split(RECORD_SEPARATOR)]

    def maintenance_database(self) -> str:
        """A database every role may connect to, for statements about other databases."""
        if self._maintenance is None:
            self.version()
        assert self._maintenance is not None
        return self._maintenance

    def admin_query(self, sql: str, doing: str) -> list[list[str]]:
        return self.query(sql, self.maintenance_database(), named=False, doing=doing)

    def version(self) -> ServerVersion:
        """The server's version, from the first maintenance database that lets us in."""
        if self._version is None:
            last: DatabaseError | None = None
            for candidate in MAINTENANCE_DATABASES:
                try:
                    rows = self.query(_VERSION_SQL, candidate, named=False, doing="connecting")
                except (DatabaseConnectionFailed, DatabasePermissionDenied) as exc:
                    last = exc
                    continue
                self._maintenance = candidate
                self._version = ServerVersion.from_num(int(rows[0][0]))
                break
            else:
                assert last is not None
                raise last
        return self._version

    def inspect(self, database: str) -> DatabaseFacts:
        """Connect to `database` (so: it exists, we may connect): version and sizes."""
        rows = self.query(
            f"SELECT current_setting('server_version_num'), "
            f"pg_database_size(current_database()), ({_TABLE_DATA_SQL});",
            database,
            doing="reading its version and size",
        )
        number, size, data = rows[0]
        self._version = ServerVersion.from_num(int(number))
        return DatabaseFacts(self._version, int(size), int(data))

    def databases_named(self, *names: str) -> dict[str, str | None]:
        """Which of `names` exist, each with its comment (None when it has none)."""
        listed = ", ".join(quote_literal(n) for n in names)
        rows = self.admin_query(
            "SELECT datname, coalesce(shobj_description(oid, 'pg_database'), '') "  # noqa: S608
            f"FROM pg_database WHERE datname IN ({listed});",
            "looking up databases",
        )
        return {row[0]: row[1] or None for row in rows}

    def database_exists(self, database: str) -> bool:
        return database in self.databases_named(database)

    def can_create_databases(self) -> bool:
        rows = self.admin_query(
            "SELECT rolcreatedb OR rolsuper FROM pg_roles WHERE rolname = current_user;",
            "reading the role's privileges",
        )
        return bool(rows) and rows[0][0] == "t"

    # -- databases -----------------------------------------------------------------------

    def create_database(self, database: str, *, comment: str) -> None:
        """CREATE DATABASE from template0 (as pg_restore wants), owned by us, commented."""
        name = quote_identifier(database)
        self.admin_query(
            f"CREATE DATABASE {name} TEMPLATE template0 ENCODING 'UTF8';\n"
            f"COMMENT ON DATABASE {name} IS {quote_literal(comment)};",
            f"creating database {database!r}",
        )

    def drop_database(self, database: str) -> None:
        """DROP DATABASE IF EXISTS, ending the sessions still in it (a killed restore's)."""
        name = quote_identifier(database)
        if self.version().number >= 130000:  # WITH (FORCE) since PostgreSQL 13
            sql = f"DROP DATABASE IF EXISTS {name} WITH (FORCE);"
        else:
            sessions = f"datname = {quote_literal(database)} AND pid <> pg_backend_pid()"
            sql = (
                f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE {sessions};\n"  # noqa: S608
                f"DROP DATABASE IF EXISTS {name};"
            )
        self.admin_query(sql, f"dropping database {database!r}")

    def rename_database(self, old: str, new: str, *, attempts: int = 5) -> None:
        """ALTER DATABASE ... RENAME; retried while a session (autovacuum) is still in it."""
        sql = f"ALTER DATABASE {quote_identifier(old)} RENAME TO {quote_identifier(new)};"
        for attempt in range(attempts):
            try:
                self.admin_query(sql, f"renaming database {old!r} to {new!r}")
                return
            except DatabaseCommandFailed as exc:
                if "being accessed by other users" not in exc.message or attempt == attempts - 1:
                    raise
                time.sleep(1.0)

    def run_script(self, database: str, statements: Sequence[str], doing: str) -> None:
        """Run statements in `database`, stopping at the first error."""
        self.query("\n".join(statements), database, doing=doing)
