"""The request as it is stored: the request Secret's values, or the files of its volume.

The operator reads it from the Secret, the mover from the mounted Secret's files; both see the
same keys (`secret_keys`). It holds secrets: never log it or put it in an exception.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from odoo_upgrade.platform.models import SftpAccess
from odoo_upgrade.redact import register_secret
from odoo_upgrade.request import secret_keys as keys


class StoredRequestUnreadable(ValueError):
    """The stored request lacks what every later step needs (its id and key or token)."""


@dataclass(frozen=True, repr=False)
class StoredRequest:
    """A request that exists on the platform, with the credentials to continue it."""

    request_id: int
    key: str  # v1 `key`, or the upgrade/request `token`
    assigned_host: str | None = None
    ssh_private_key: str | None = None
    ssh_public_key: str | None = None
    sftp_access: SftpAccess | None = None
    sftp_host_key: str | None = None
    sftp_download_access: SftpAccess | None = None  # the SFTP download grant (request done)

    def __repr__(self) -> str:  # secrets stay out of tracebacks and logs
        return f"StoredRequest(request_id={self.request_id})"

    @classmethod
    def from_values(cls, values: Mapping[str, str]) -> StoredRequest:
        """From the Secret's decoded data; raises `StoredRequestUnreadable` if incomplete."""
        try:
            request_id = int(values[keys.REQUEST_ID].strip())
        except (KeyError, ValueError):
            raise StoredRequestUnreadable(f"no usable '{keys.REQUEST_ID}'") from None
        secret = (values.get(keys.KEY) or values.get(keys.TOKEN) or "").strip()
        if not secret:
            raise StoredRequestUnreadable(f"no '{keys.KEY}' or '{keys.TOKEN}'")
        register_secret(secret, values.get(keys.SSH_PRIVATE_KEY))
        return cls(
            request_id=request_id,
            key=secret,
            assigned_host=_optional(values, keys.ASSIGNED_HOST),
            ssh_private_key=values.get(keys.SSH_PRIVATE_KEY) or None,
            ssh_public_key=_optional(values, keys.SSH_PUBLIC_KEY),
            sftp_access=_access(values, keys.SFTP_ACCESS),
            sftp_host_key=_optional(values, keys.SFTP_HOST_KEY),
            sftp_download_access=_access(values, keys.SFTP_DOWNLOAD_ACCESS),
        )

    @classmethod
    def from_directory(cls, directory: Path) -> StoredRequest:
        """From a mounted Secret volume: one file per key."""
        values: dict[str, str] = {}
        for name in (keys.REQUEST_ID, keys.KEY, keys.TOKEN, keys.ASSIGNED_HOST,
                     keys.SSH_PRIVATE_KEY, keys.SSH_PUBLIC_KEY, keys.SFTP_ACCESS,
                     keys.SFTP_HOST_KEY, keys.SFTP_DOWNLOAD_ACCESS):  # fmt: skip
            path = directory / name
            try:
                values[name] = path.read_text()
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise StoredRequestUnreadable(f"{path} unreadable ({type(exc).__name__})") from None
        return cls.from_values(values)


def _access(values: Mapping[str, str], name: str) -> SftpAccess | None:
    """A stored `request_sftp_access` answer; None when absent or unreadable."""
    text = values.get(name)
    try:
        return SftpAccess.from_json(json.loads(text)) if text else None
    except (ValueError, KeyError, TypeError):
        return None


def _optional(values: Mapping[str, str], name: str) -> str | None:
    value = (values.get(name) or "").strip()
    return value or None
