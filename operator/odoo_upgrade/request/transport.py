"""How a dump travels to and from the platform, chosen the same way by every driver."""

from __future__ import annotations

from enum import StrEnum

from odoo_upgrade.request.platform import PlatformApi
from odoo_upgrade.request.upgraded import UpgradedFormat

# Above this size `auto` picks SFTP: a broken HTTPS upload restarts from zero, SFTP resumes.
DEFAULT_SFTP_THRESHOLD_BYTES = 1024**3


class Transport(StrEnum):
    """`spec.transport` / `--transport`."""

    AUTO = "auto"
    HTTPS = "https"
    SFTP = "sftp"
    RSYNC = "rsync"  # the upgrade/request API only


# The transports each platform API offers (`auto` first: the default of both).
TRANSPORTS_BY_API: dict[str, tuple[Transport, ...]] = {
    PlatformApi.DATABASE_V1: (Transport.AUTO, Transport.HTTPS, Transport.SFTP),
    PlatformApi.UPGRADE_REQUEST: (Transport.AUTO, Transport.RSYNC),
}


def transports_of(api: str) -> tuple[Transport, ...]:
    """What `transport` may be with the platform API `api`."""
    return TRANSPORTS_BY_API.get(api, TRANSPORTS_BY_API[PlatformApi.DATABASE_V1])


def transport_fits(api: str, requested: str) -> bool:
    """Whether the API `api` offers the transport `requested`."""
    return requested in transports_of(api)


def may_use_sftp(
    requested: str,
    api: str = PlatformApi.DATABASE_V1,
    *,
    size: int | None = None,
    threshold: int = DEFAULT_SFTP_THRESHOLD_BYTES,
) -> bool:
    """Whether SFTP access must be granted before the upload: for `sftp`, and for `auto`
    unless the dump's `size` is known and `auto` will send it over HTTPS (a dump the
    operator made itself; of a file it did not make, only the mover sees the size)."""
    if api != PlatformApi.DATABASE_V1 or requested not in (Transport.SFTP, Transport.AUTO):
        return False
    return size is None or choose_transport(requested, size, threshold) is Transport.SFTP


def choose_transport(
    requested: str,
    size: int,
    threshold: int,
    *,
    sftp_available: bool = True,
    api: str = PlatformApi.DATABASE_V1,
) -> Transport:
    """`auto`: rsync on upgrade/request; on v1 SFTP (resumable) above the threshold when SFTP
    access exists, else HTTPS."""
    if api == PlatformApi.UPGRADE_REQUEST:
        return Transport.RSYNC
    if requested != Transport.AUTO:
        return Transport(requested)
    if size > threshold and sftp_available:
        return Transport.SFTP
    return Transport.HTTPS


def download_transport(
    requested: str, fmt: str, uploaded_over: str | None, *, api: str = PlatformApi.DATABASE_V1
) -> Transport:
    """How the upgraded dump comes back: rsync on upgrade/request; on v1 the archive over SFTP
    when `sftp` was asked, or `auto` sent the dump over SFTP (it was above the threshold), else
    HTTPS. The SQL stream is HTTPS only: SFTP serves the archive (`upgraded_<filename>`)."""
    if api == PlatformApi.UPGRADE_REQUEST:
        return Transport.RSYNC
    if fmt != UpgradedFormat.ARCHIVE:
        return Transport.HTTPS
    if requested == Transport.SFTP or (
        requested == Transport.AUTO and uploaded_over == Transport.SFTP
    ):
        return Transport.SFTP
    return Transport.HTTPS
