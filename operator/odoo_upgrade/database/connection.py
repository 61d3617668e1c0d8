"""Connection settings from a CloudNativePG-style `<cluster>-app` Secret, and libpq's environment.

The Secret's keys: `host`, `port` (default 5432), `username`, `password`, optional `sslmode`
(CloudNativePG also writes `dbname`, `uri`, ... which are not needed). They come as a mapping
(decoded Secret data) or as a directory of files (a mounted Secret volume).

The password reaches the PostgreSQL tools only through a libpq password file (mode 0600, in a
private temp dir, named by `PGPASSFILE`): never a command-line argument, never a log line.
Everything the tools print goes through `redact_password` before it reaches a message.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, quote, quote_plus, unquote, urlsplit

from odoo_upgrade.database.errors import DatabaseSecretKeyMissing
from odoo_upgrade.redact import MASK, redact, register_secret

REQUIRED_KEYS = ("host", "username", "password")
DEFAULT_PORT = 5432
CONNECT_TIMEOUT_SECONDS = 10
APPLICATION_NAME = "odoo-upgrade"
# Inherited libpq variables that would send a child elsewhere or with other credentials.
_OVERRIDDEN = (
    "PGHOST",
    "PGHOSTADDR",
    "PGPORT",
    "PGUSER",
    "PGPASSWORD",
    "PGPASSFILE",
    "PGSERVICE",
    "PGSERVICEFILE",
    "PGDATABASE",
    "PGSSLMODE",
)


@dataclass(frozen=True)
class ConnectionSettings:
    """Where a PostgreSQL server is and who we are on it. `repr` never shows the password.

    `password=None` means "libpq finds it" (`PGPASSWORD` or `~/.pgpass` of the caller's
    environment), the CLI's case; Secrets always carry one.
    """

    host: str
    port: int = DEFAULT_PORT
    user: str = "postgres"
    password: str | None = field(default=None, repr=False)
    sslmode: str | None = None

    def __post_init__(self) -> None:
        register_secret(self.password)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


def _text(value: str | bytes) -> str:
    text = value.decode("utf-8") if isinstance(value, bytes) else value
    # Files made with `echo` or an editor end in a newline that is not part of the value.
    return text[:-1] if text.endswith("\n") else text


def settings_from_secret(
    data: Mapping[str, str | bytes], *, field_name: str = "source.database.connectionSecretRef"
) -> ConnectionSettings:
    """Settings from decoded Secret data; a missing key names `field_name` and the key."""
    missing = [key for key in REQUIRED_KEYS if not _text(data.get(key, b"")).strip()]
    if missing:
        raise DatabaseSecretKeyMissing(
            f"{field_name}: the Secret has no {', '.join(repr(k) for k in missing)} "
            f"(expected keys host, port, username, password and optionally sslmode, "
            f"as in a CloudNativePG <cluster>-app Secret)",
            field=field_name,
        )
    port_text = _text(data.get("port", str(DEFAULT_PORT))).strip() or str(DEFAULT_PORT)
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise DatabaseSecretKeyMissing(
            f"{field_name}: the Secret's 'port' is {port_text[:20]!r}, expected a TCP port "
            f"number (1-65535)",
            field=field_name,
        )
    sslmode = _text(data.get("sslmode", "")).strip() or None
    return ConnectionSettings(
        host=_text(data["host"]).strip(),
        port=int(port_text),
        user=_text(data["username"]).strip(),
        password=_text(data["password"]),
        sslmode=sslmode,
    )


def settings_from_secret_dir(
    directory: str | os.PathLike[str],
    *,
    field_name: str = "source.database.connectionSecretRef",
) -> ConnectionSettings:
    """Settings from a mounted Secret volume: one file per key."""
    root = Path(directory)
    data: dict[str, bytes] = {}
    for key in (*REQUIRED_KEYS, "port", "sslmode"):
        candidate = root / key
        if candidate.is_file():
            data[key] = candidate.read_bytes()
    return settings_from_secret(data, field_name=field_name)


def settings_from_url(url: str) -> tuple[ConnectionSettings, str | None]:
    """`postgresql://user:password@host:port/dbname?sslmode=...` -> (settings, dbname)."""
    parts = urlsplit(url)
    if parts.scheme not in ("postgres", "postgresql") or not parts.hostname:
        raise ValueError("expected a postgresql://user:password@host:port/database URL")
    query = parse_qs(parts.query)
    database = unquote(parts.path.lstrip("/")) or None
    password = unquote(parts.password) if parts.password is not None else None
    register_secret(password, parts.password)
    settings = ConnectionSettings(
        host=parts.hostname,
        port=parts.port or DEFAULT_PORT,
        user=unquote(parts.username or "postgres"),
        password=password,
        sslmode=query["sslmode"][0] if query.get("sslmode") else None,
    )
    return settings, database


def settings_from_environment(
    env: Mapping[str, str] | None = None,
    *,
    host: str | None = None,
    port: int | None = None,
    user: str | None = None,
) -> ConnectionSettings:
    """The CLI's settings: flags, else `PGHOST`/`PGPORT`/`PGUSER`; the password stays libpq's."""
    source = os.environ if env is None else env
    return ConnectionSettings(
        host=host or source.get("PGHOST") or "localhost",
        port=port or int(source.get("PGPORT") or DEFAULT_PORT),
        user=user or source.get("PGUSER") or source.get("USER") or "postgres",
        password=None,
        sslmode=source.get("PGSSLMODE") or None,
    )


def redact_password(text: str, settings: ConnectionSettings | None) -> str:
    """`text` with the settings' password (plain and percent-encoded) and known secrets masked.

    Unlike the process-wide registry, this masks short passwords too: a libpq message is
    never worth a leaked password.
    """
    password = settings.password if settings is not None else None
    if password:
        forms = {password, quote(password, safe=""), quote_plus(password)}
        for form in sorted(forms, key=len, reverse=True):
            text = text.replace(form, MASK)
    return redact(text)


def _pgpass_field(value: str) -> str:
    return value.replace("\\", "\\\\").replace(":", "\\:")


def conninfo_dbname(database: str) -> str:
    """A conninfo string naming only the database, for `-d`: a name with `=` stays a name."""
    escaped = database.replace("\\", "\\\\").replace("'", "\\'")
    return f"dbname='{escaped}'"


@contextmanager
def libpq_environment(
    settings: ConnectionSettings, *, base: Mapping[str, str] | None = None
) -> Iterator[dict[str, str]]:
    """The environment for pg_dump/pg_restore/psql children reaching `settings`' server.

    With a password, it is written to a libpq password file in a private temp dir (removed
    on exit) and inherited `PGPASSWORD`/`PGPASSFILE` are dropped; without one, the caller's
    libpq setup (`PGPASSWORD`, `~/.pgpass`) is kept. The database is chosen per command.
    """
    env = dict(os.environ if base is None else base)
    inherited_password: dict[str, str] = {
        k: env[k] for k in ("PGPASSWORD", "PGPASSFILE") if k in env
    }
    for name in _OVERRIDDEN:
        env.pop(name, None)
    env.update(
        PGHOST=settings.host,
        PGPORT=str(settings.port),
        PGUSER=settings.user,
        PGCONNECT_TIMEOUT=env.get("PGCONNECT_TIMEOUT", str(CONNECT_TIMEOUT_SECONDS)),
        PGAPPNAME=APPLICATION_NAME,
        PGCLIENTENCODING="UTF8",
        # libpq's and psql's own messages in English, so failures can be told apart.
        LC_MESSAGES="C",
    )
    if settings.sslmode:
        env["PGSSLMODE"] = settings.sslmode
    if settings.password is None:
        env.update(inherited_password)
        yield env
        return
    directory = tempfile.mkdtemp(prefix="odoo-upgrade-pg-")
    try:
        if "\n" in settings.password or "\r" in settings.password:
            # A password file holds one line per entry: this one can only travel in the
            # child's environment (never its command line).
            env["PGPASSWORD"] = settings.password
        else:
            passfile = Path(directory) / "pgpass"
            fd = os.open(passfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                # Any host, database and user: the file exists for these children only,
                # whose PGHOST/PGUSER are set above (one session also talks to `postgres`).
                out.write(f"*:*:*:*:{_pgpass_field(settings.password)}\n")
            env["PGPASSFILE"] = str(passfile)
        yield env
    finally:
        shutil.rmtree(directory, ignore_errors=True)
