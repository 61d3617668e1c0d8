"""Which upgraded file a v1 download fetches, by `destination.format` / `--format`."""

from __future__ import annotations

from enum import StrEnum

from odoo_upgrade.platform.models import UpgradeRequest


class UpgradedFormat(StrEnum):
    ARCHIVE = "archive"  # the platform's dump archive (`upgraded/archive`)
    SQL = "sql"  # the plain SQL stream (`upgraded/sql`)


def upgraded_url(request: UpgradeRequest, fmt: str) -> str | None:
    """The key-bearing URL of the upgraded file in `fmt` (a secret), if the platform gave one."""
    if fmt == UpgradedFormat.SQL:
        return request.upgraded_sql_url
    return request.upgraded_dump_url
