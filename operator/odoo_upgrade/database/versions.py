"""Version rules, each written once: PostgreSQL majors (client vs server) and Odoo series.

PostgreSQL names its major versions `9.6`, `10`, ..., `17`: before 10 the major is two
numbers. `PgMajor` orders them by `server_version_num // 100` (`90624 -> 906`, `150018 -> 1500`).
Odoo modules carry versions like `16.0.1.3` or `saas~17.4.1.0`: the series is the first two
numbers, with the `saas~` prefix when there is one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_VERSION_TEXT = re.compile(r"(\d+)(?:\.(\d+))?(?:\.(\d+))?")
_TOOL_VERSION = re.compile(r"\(PostgreSQL\)\s+(\d+(?:\.\d+)*)")
_ODOO_SERIES = re.compile(r"^((?:saas~)?\d+\.\d+)(?:\.|$)")


@dataclass(frozen=True, order=True)
class PgMajor:
    """A PostgreSQL major version, ordered; `str()` gives `15` or `9.6`."""

    number: int  # server_version_num // 100 of the major's first release: 1500, 906

    @classmethod
    def from_version_num(cls, version_num: int) -> PgMajor:
        """From `SHOW server_version_num` (`150018` -> 15, `90624` -> 9.6)."""
        if version_num >= 100000:
            return cls(version_num // 10000 * 100)
        return cls(version_num // 100)

    @classmethod
    def parse(cls, text: str) -> PgMajor:
        """From a version text: `15.18`, `15`, `9.6.24`, `16beta2` -> its major."""
        match = _VERSION_TEXT.match(text.strip())
        if not match:
            raise ValueError(f"not a PostgreSQL version: {text!r}")
        first = int(match.group(1))
        if first >= 10:
            return cls(first * 100)
        return cls(first * 100 + int(match.group(2) or 0))

    def __str__(self) -> str:
        if self.number >= 1000:
            return str(self.number // 100)
        return f"{self.number // 100}.{self.number % 100}"


def version_from_num(version_num: int) -> str:
    """`150018` -> `15.18`, `90624` -> `9.6.24` (what `SHOW server_version` starts with)."""
    if version_num >= 100000:
        return f"{version_num // 10000}.{version_num % 10000}"
    return f"{version_num // 10000}.{version_num // 100 % 100}.{version_num % 100}"


def parse_tool_version(output: str) -> str:
    """The version in `pg_dump --version` output: `pg_dump (PostgreSQL) 15.18 (Debian …)`."""
    match = _TOOL_VERSION.search(output)
    if not match:
        raise ValueError(f"not a PostgreSQL client version line: {output.strip()[:200]!r}")
    return match.group(1)


def client_supports_server(client: PgMajor, server: PgMajor) -> bool:
    """pg_dump/pg_restore/psql handle servers of their own major and older, never newer."""
    return client >= server


def odoo_series(module_version: str | None) -> str | None:
    """`16.0.1.3` -> `16.0`, `saas~17.4.1.0` -> `saas~17.4`, `18.0` -> `18.0`; else None."""
    if not module_version:
        return None
    match = _ODOO_SERIES.match(module_version.strip())
    return match.group(1) if match else None


def in_target_series(module_version: str | None, target: str) -> bool:
    """Whether a module version (`ir_module_module.latest_version`) belongs to `target`."""
    return odoo_series(module_version) == target.strip()
