"""The `OdooUpgrade` spec as a typed model, parsed and checked before anything acts on it.

The CRD already rejects most bad input at admission; this parse repeats the checks that guard
the operator itself (relative paths, durations) so that a CRD installed without its CEL rules
cannot make the operator write outside a volume.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from odoo_upgrade.database.errors import DatabaseNameInvalid
from odoo_upgrade.database.server import validate_database_name
from odoo_upgrade.request.platform import DEFAULT_PLATFORM_URL, PlatformApi, env_var_problem
from odoo_upgrade.request.transport import (
    DEFAULT_SFTP_THRESHOLD_BYTES,
    Transport,
    may_use_sftp,
    transport_fits,
    transports_of,
)
from odoo_upgrade.request.upgraded import UpgradedFormat

GROUP = "upgrade.odoo-operator.io"
VERSION = "v1alpha1"
PLURAL = "odooupgrades"
KIND = "OdooUpgrade"

DEFAULT_POLL_INTERVAL = 60.0
MIN_POLL_INTERVAL = 5.0
AIMS = ("test", "production")
FORMATS = tuple(f.value for f in UpgradedFormat)
TRANSPORTS = tuple(t.value for t in Transport)
PLATFORM_APIS = tuple(a.value for a in PlatformApi)
MAX_ENV_VARS = 64

_TARGET = re.compile(r"^(saas~)?\d+\.\d+$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")


class SpecError(ValueError):
    """The spec is invalid; the message names the field and what was expected."""

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        super().__init__(f"spec.{field}: {problem}")


def parse_duration(
    text: str, *, field: str = "platform.pollInterval", minimum: float = MIN_POLL_INTERVAL
) -> float:
    """Seconds of a Go-style duration limited to h/m/s ("30s", "2m", "1m30s", "1h").

    At least `minimum` seconds: the default is pollInterval's floor, the interval of Odoo's own
    upgrade script (the CRD checks the same).
    """
    match = _DURATION.match(text.strip())
    if not text.strip() or match is None:
        raise SpecError(field, f'expected a duration such as "30s", "2m" or "1m30s", got {text!r}')
    hours, minutes, seconds = (int(g) if g else 0 for g in match.groups())
    total = hours * 3600 + minutes * 60 + seconds
    if total <= 0:
        raise SpecError(field, f"must be longer than zero, got {text!r}")
    if total < minimum:
        raise SpecError(field, f"must be at least {minimum:g}s, got {text!r}")
    return float(total)


def check_relative_path(path: str, field: str) -> str:
    """`path` if it names a file inside its volume: relative, without `..`, not a directory."""
    if not path:
        raise SpecError(field, "must not be empty")
    if path.startswith("/"):
        raise SpecError(field, f'must be a relative path (no leading "/"), got {path!r}')
    if ".." in path.split("/"):
        raise SpecError(field, f'must not contain ".." path segments, got {path!r}')
    if path == "." or path.endswith(("/", "/.")):
        raise SpecError(field, f'must name a file (not "." and not ending in "/"), got {path!r}')
    return path


@dataclass(frozen=True)
class SecretKeyRef:
    name: str
    key: str


@dataclass(frozen=True)
class VolumePath:
    claim_name: str
    path: str


@dataclass(frozen=True)
class DatabaseRef:
    """A PostgreSQL database and the Secret holding how to reach it (CloudNativePG's
    `<cluster>-app` keys: host, port, username, password, optional sslmode)."""

    name: str
    secret_name: str


@dataclass(frozen=True)
class FilestoreSpec:
    """The new database's filestore: `path` = copy of `source_path` + the upgraded one."""

    claim_name: str
    source_path: str
    path: str


@dataclass(frozen=True)
class RestoreSpec:
    """Where the upgraded dump is restored: a NEW database, and optionally its filestore."""

    database: DatabaseRef
    filestore: FilestoreSpec | None


@dataclass(frozen=True)
class UpgradeSpec:
    """What the user asked for, with defaults applied (DESIGN.md §3)."""

    target: str
    aim: str
    email: str
    contract: SecretKeyRef
    filename: str
    timezone: str | None
    source: VolumePath
    destination: VolumePath
    destination_format: str
    transport: str
    platform_url: str
    platform_api: str
    poll_interval: float
    sftp_host_key: str | None
    sftp_threshold_bytes: int
    source_database: DatabaseRef | None = None  # dumped to source.path before `create`
    restore: RestoreSpec | None = None  # the upgraded dump restored after the download
    platform_env: tuple[str, ...] = ()  # upgrade/request `env_vars`

    @property
    def touches_databases(self) -> bool:
        """Whether a database is dumped or restored (a pre-flight check comes first)."""
        return self.source_database is not None or self.restore is not None

    def needs_sftp_access(self, dump_bytes: int | None) -> bool:
        """Whether SFTP credentials must exist before uploading a dump of `dump_bytes`
        (None: not known before the mover looks)."""
        return may_use_sftp(
            self.transport, self.platform_api, size=dump_bytes, threshold=self.sftp_threshold_bytes
        )

    @property
    def downloads_a_directory(self) -> bool:
        """upgrade/request: `destination.path` is a new directory receiving the upgraded set."""
        return self.platform_api == PlatformApi.UPGRADE_REQUEST


def _section(spec: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = spec.get(name)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise SpecError(name, "expected an object")
    return value


def _string(section: Mapping[str, Any], name: str, field: str, default: str | None = None) -> str:
    value = section.get(name, default)
    if value is None or value == "":
        raise SpecError(field, "is required")
    if not isinstance(value, str):
        raise SpecError(field, f"expected a string, got {type(value).__name__}")
    return value


def _choice(
    section: Mapping[str, Any], name: str, field: str, default: str, allowed: tuple[str, ...]
) -> str:
    value = _string(section, name, field, default)
    if value not in allowed:
        raise SpecError(field, f"expected one of {', '.join(allowed)}, got {value!r}")
    return value


def _database(section: Mapping[str, Any], field: str) -> DatabaseRef:
    name = _string(section, "name", f"{field}.name")
    try:
        validate_database_name(name, f"spec.{field}.name")
    except DatabaseNameInvalid as error:
        raise SpecError(f"{field}.name", str(error).split(": ", 1)[-1]) from None
    secret = _section(section, "connectionSecretRef")
    return DatabaseRef(name, _string(secret, "name", f"{field}.connectionSecretRef.name"))


def _filestore(section: Mapping[str, Any]) -> FilestoreSpec:
    field = "restore.filestore"
    source_path = check_relative_path(
        _string(section, "sourcePath", f"{field}.sourcePath"), f"{field}.sourcePath"
    )
    path = check_relative_path(_string(section, "path", f"{field}.path"), f"{field}.path")
    source, target = source_path.rstrip("/"), path.rstrip("/")
    if source == target or target.startswith(source + "/") or source.startswith(target + "/"):
        raise SpecError(
            f"{field}.path",
            f"{path!r} and sourcePath {source_path!r} overlap: the new filestore must lie "
            "outside the production one",
        )
    return FilestoreSpec(_string(section, "claimName", f"{field}.claimName"), source_path, path)


def _restore(spec: Mapping[str, Any]) -> RestoreSpec | None:
    if spec.get("restore") is None:
        return None
    section = _section(spec, "restore")
    if section.get("database") is None:
        raise SpecError("restore.database", "is required")
    filestore = _section(section, "filestore") if section.get("filestore") is not None else None
    return RestoreSpec(
        _database(_section(section, "database"), "restore.database"),
        _filestore(filestore) if filestore is not None else None,
    )


def parse_spec(spec: Mapping[str, Any]) -> UpgradeSpec:
    """Parse the resource's `.spec` into an `UpgradeSpec`, or raise `SpecError`."""
    target = _string(spec, "target", "target")
    if not _TARGET.match(target):
        raise SpecError(
            "target", f'expected a version such as "18.0" or "saas~17.4", got {target!r}'
        )
    email = _string(spec, "email", "email")
    if not _EMAIL.match(email):
        raise SpecError("email", f"expected an email address, got {email!r}")

    contract = _section(spec, "contractSecretRef")
    source = _section(spec, "source")
    destination = _section(spec, "destination")
    platform = _section(spec, "platform")
    sftp = _section(spec, "sftp")

    source_path = check_relative_path(_string(source, "path", "source.path"), "source.path")
    filename = spec.get("filename") or posixpath.basename(source_path.rstrip("/"))
    if not isinstance(filename, str) or not filename or "/" in filename:
        raise SpecError("filename", f"expected a file name without '/', got {filename!r}")
    timezone = spec.get("timezone") or None
    host_key = sftp.get("hostKey") or None
    threshold = sftp.get("thresholdBytes", DEFAULT_SFTP_THRESHOLD_BYTES)
    if not isinstance(threshold, int) or threshold < 0:
        raise SpecError(
            "sftp.thresholdBytes", f"expected a non-negative integer, got {threshold!r}"
        )
    url = _string(platform, "url", "platform.url", DEFAULT_PLATFORM_URL)
    if not url.startswith(("https://", "http://")):
        raise SpecError("platform.url", f"expected an http(s) URL, got {url!r}")
    poll = platform.get("pollInterval")
    api = _choice(platform, "api", "platform.api", PlatformApi.DATABASE_V1.value, PLATFORM_APIS)
    transport = _choice(spec, "transport", "transport", "auto", TRANSPORTS)
    check_fits_the_api(api, transport, spec, host_key)
    return UpgradeSpec(
        target=target,
        aim=_choice(spec, "aim", "aim", "test", AIMS),
        email=email,
        contract=SecretKeyRef(
            name=_string(contract, "name", "contractSecretRef.name"),
            key=_string(contract, "key", "contractSecretRef.key", "contract"),
        ),
        filename=filename,
        timezone=str(timezone) if timezone else None,
        source=VolumePath(_string(source, "claimName", "source.claimName"), source_path),
        destination=VolumePath(
            _string(destination, "claimName", "destination.claimName"),
            check_relative_path(
                _string(destination, "path", "destination.path"), "destination.path"
            ),
        ),
        destination_format=_choice(destination, "format", "destination.format", "archive", FORMATS),
        transport=transport,
        platform_url=url.rstrip("/"),
        platform_api=api,
        poll_interval=parse_duration(poll) if isinstance(poll, str) else DEFAULT_POLL_INTERVAL,
        sftp_host_key=str(host_key) if host_key else None,
        sftp_threshold_bytes=threshold,
        source_database=(
            _database(_section(source, "database"), "source.database")
            if source.get("database") is not None
            else None
        ),
        restore=_restore(spec),
        platform_env=parse_env(platform.get("env"), api),
    )


def check_fits_the_api(api: str, transport: str, spec: Mapping[str, Any], host_key: Any) -> None:
    """The settings of one platform API are refused with the other (as the CRD's CEL rules)."""
    if not transport_fits(api, transport):
        allowed = " or ".join(transports_of(api))
        raise SpecError(
            "transport",
            f"{transport!r} is not a transport of spec.platform.api {api!r} (expected {allowed})",
        )
    if api != PlatformApi.UPGRADE_REQUEST:
        return
    fmt = (spec.get("destination") or {}).get("format", UpgradedFormat.ARCHIVE.value)
    if fmt != UpgradedFormat.ARCHIVE:
        raise SpecError(
            "destination.format",
            f"{fmt!r} is a database-v1 download; with spec.platform.api upgrade-request the "
            "destination is a directory receiving the upgraded set (leave format at archive)",
        )
    if host_key:
        raise SpecError(
            "sftp.hostKey",
            "pins a database-v1 SFTP server; with spec.platform.api upgrade-request the host "
            "keys come from the platform's transfer/start",
        )


def parse_env(value: Any, api: str) -> tuple[str, ...]:
    """`spec.platform.env`: `NAME=VALUE` strings, upgrade-request only."""
    if value is None or value == []:
        return ()
    if not isinstance(value, list):
        raise SpecError("platform.env", "expected a list of NAME=VALUE strings")
    if api != PlatformApi.UPGRADE_REQUEST:
        raise SpecError(
            "platform.env",
            "is sent only by spec.platform.api upgrade-request (database-v1 has no environment "
            "variables)",
        )
    if len(value) > MAX_ENV_VARS:
        raise SpecError("platform.env", f"at most {MAX_ENV_VARS} entries, got {len(value)}")
    for index, entry in enumerate(value):
        problem = env_var_problem(entry)
        if problem:
            raise SpecError(f"platform.env[{index}]", problem)
    return tuple(value)
