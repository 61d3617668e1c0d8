"""The `Platform` of each platform API (`spec.platform.api`, `--api`)."""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

from odoo_upgrade.platform.upgrade_request_platform import UpgradeRequestPlatform
from odoo_upgrade.platform.v1 import DatabaseV1
from odoo_upgrade.request.platform import Platform, PlatformApi


def insecure_hosts_named_by(base_url: str) -> frozenset[str]:
    """A plain-http platform URL given explicitly (an allowlisted emulator) names the one
    `host:port` that may be spoken to without TLS; every other host gets https."""
    parts = urlsplit(base_url)
    if parts.scheme != "http" or not parts.hostname:
        return frozenset()
    return frozenset({f"{parts.hostname.lower()}:{parts.port or 80}"})


def open_platform(api: str, base_url: str, *, plain_http_hosts: Iterable[str] = ()) -> Platform:
    """A client of `api` at `base_url`; close it with `aclose()`.

    `plain_http_hosts` (`host:port`) may also be spoken to without TLS, as a request's
    assigned host: the operator passes the plain-http URLs of its allowlist."""
    if api == PlatformApi.DATABASE_V1:
        return DatabaseV1(base_url)
    if api == PlatformApi.UPGRADE_REQUEST:
        return UpgradeRequestPlatform(
            base_url,
            allow_insecure_hosts=insecure_hosts_named_by(base_url) | frozenset(plain_http_hosts),
        )
    raise ValueError(
        f"unknown platform API {api!r} (expected one of: {', '.join(a.value for a in PlatformApi)})"
    )
