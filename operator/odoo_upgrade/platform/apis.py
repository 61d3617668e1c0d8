"""The `Platform` of each platform API (`spec.platform.api`, `--api`)."""

from __future__ import annotations

from odoo_upgrade.platform.v1 import DatabaseV1
from odoo_upgrade.request.platform import Platform, PlatformApi


def open_platform(api: str, base_url: str) -> Platform:
    """A client of `api` at `base_url`; close it with `aclose()`."""
    if api == PlatformApi.DATABASE_V1:
        return DatabaseV1(base_url)
    raise ValueError(f"unknown platform API {api!r} (expected one of: database-v1)")
