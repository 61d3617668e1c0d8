"""How a dump travels to and from the platform, chosen the same way by every driver."""

from __future__ import annotations

from enum import StrEnum

# Above this size `auto` picks SFTP: a broken HTTPS upload restarts from zero, SFTP resumes.
DEFAULT_SFTP_THRESHOLD_BYTES = 1024**3


class Transport(StrEnum):
    """`spec.transport` / `--transport`."""

    AUTO = "auto"
    HTTPS = "https"
    SFTP = "sftp"
    RSYNC = "rsync"  # the upgrade/request API only


def may_use_sftp(requested: str) -> bool:
    """Whether SFTP access must be granted before the upload (`auto` may pick SFTP)."""
    return requested in (Transport.SFTP, Transport.AUTO)


def choose_transport(
    requested: str, size: int, threshold: int, *, sftp_available: bool = True
) -> Transport:
    """`auto`: SFTP (resumable) above the threshold when SFTP access exists, else HTTPS."""
    if requested != Transport.AUTO:
        return Transport(requested)
    if size > threshold and sftp_available:
        return Transport.SFTP
    return Transport.HTTPS
