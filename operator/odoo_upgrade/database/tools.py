"""Where pg_dump, pg_restore and psql are, and how new they are.

Candidates: every directory on PATH holding `pg_dump`, and Debian's
`/usr/lib/postgresql/<N>/bin`; the newest wins (a newer client reads older servers, never the
reverse). `ODOO_UPGRADE_PG_BIN=<dir>` names the one directory to use instead.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from odoo_upgrade.database.errors import CLIENT_IMAGE_HINT, ClientToolsMissing, ClientTooOld
from odoo_upgrade.database.versions import PgMajor, client_supports_server, parse_tool_version

BIN_DIR_ENV = "ODOO_UPGRADE_PG_BIN"
DEBIAN_BIN_GLOB = "/usr/lib/postgresql/*/bin"
TOOLS = ("pg_dump", "pg_restore", "psql")


@dataclass(frozen=True)
class ClientTools:
    """One directory's pg_dump, pg_restore and psql, with pg_dump's version."""

    bin_dir: Path
    version: str  # "15.18"
    _versions: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    @property
    def major(self) -> PgMajor:
        return PgMajor.parse(self.version)

    def path(self, tool: str) -> str:
        return str(self.bin_dir / tool)

    def tool_version(self, tool: str) -> str:
        """`<tool> --version` of this directory (cached)."""
        if tool not in self._versions:
            self._versions[tool] = _tool_version(self.bin_dir / tool)
        return self._versions[tool]

    def require_supports(
        self, tool: str, server_version: str, *, server_of: str, hint: str = CLIENT_IMAGE_HINT
    ) -> None:
        """Raise `ClientTooOld` unless `tool` handles a server of `server_version`.

        `server_of` says whose server it is in the message (e.g. the Secret's field).
        """
        client_version = self.tool_version(tool)
        client, server = PgMajor.parse(client_version), PgMajor.parse(server_version)
        if not client_supports_server(client, server):
            raise ClientTooOld(
                f"{tool} {client_version} (in {self.bin_dir}) is older than the PostgreSQL "
                f"{server_version} server of {server_of}: {tool} must be at least version "
                f"{server}; change {hint} to one with a PostgreSQL {server} (or newer) client"
            )


def _tool_version(executable: Path) -> str:
    try:
        completed = subprocess.run(
            [str(executable), "--version"], capture_output=True, text=True, timeout=30, check=False
        )
    except OSError as exc:
        raise ClientToolsMissing(f"cannot run {executable}: {exc.strerror}") from None
    try:
        return parse_tool_version(completed.stdout)
    except ValueError:
        raise ClientToolsMissing(
            f"{executable} --version did not print a PostgreSQL version "
            f"(exit {completed.returncode}: {completed.stdout.strip()[:200]!r})"
        ) from None


def _is_debian_wrapper(executable: Path) -> bool:
    """Debian's /usr/bin/pg_dump is pg_wrapper (Perl), dispatching to a versioned bin dir
    that is a candidate of its own: skipping it saves ~0.1 s per command."""
    return os.path.realpath(executable).endswith("/pg_wrapper")


def _candidate_dirs(env: Mapping[str, str]) -> list[Path]:
    seen: list[Path] = []
    for entry in env.get("PATH", "").split(os.pathsep):
        executable = Path(entry) / "pg_dump"
        if entry and executable.is_file() and not _is_debian_wrapper(executable):
            seen.append(Path(entry))
    seen.extend(sorted(Path("/").glob(DEBIAN_BIN_GLOB.lstrip("/"))))
    unique: list[Path] = []
    for directory in seen:
        if directory not in unique and all((directory / tool).is_file() for tool in TOOLS):
            unique.append(directory)
    return unique


def find_client_tools(
    env: Mapping[str, str] | None = None, *, hint: str = CLIENT_IMAGE_HINT
) -> ClientTools:
    """The newest pg_dump/pg_restore/psql directory (or `ODOO_UPGRADE_PG_BIN`'s)."""
    source = os.environ if env is None else env
    override = source.get(BIN_DIR_ENV)
    if override:
        directory = Path(override)
        absent = [tool for tool in TOOLS if not (directory / tool).is_file()]
        if absent:
            raise ClientToolsMissing(
                f"{BIN_DIR_ENV}={override} has no {', '.join(absent)}; it must name a directory "
                "holding pg_dump, pg_restore and psql"
            )
        return ClientTools(directory, _tool_version(directory / "pg_dump"))
    found = [ClientTools(d, _tool_version(d / "pg_dump")) for d in _candidate_dirs(source)]
    if not found:
        raise ClientToolsMissing(
            "the PostgreSQL client tools (pg_dump, pg_restore, psql) are not installed: none on "
            f"PATH nor in {DEBIAN_BIN_GLOB}; install postgresql-client or change {hint}"
        )
    # max() keeps the first of equals: PATH's order decides between same versions.
    return max(found, key=lambda tools: tools.major)
