"""SFTP access to a v1 request: a key pair, `request_sftp_access`, and whom to trust.

The grant is stored in the request Secret (operator) or the state file (CLI) so that every
later attempt authenticates with the key the platform already knows. The host key is pinned
by the user (`spec.sftp.hostKey`, `--host-key`), else trusted on first use and recorded: the
mover that first connects reports it, and every later attempt pins it.

The SFTP download (the seed's "Downloading your database dump") asks `request_sftp_access`
again once the request is `done`, with the key pair already stored (`SFTP download grant`,
kept apart from the upload's), and the same host key record applies.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from odoo_upgrade.platform.models import SftpAccess
from odoo_upgrade.redact import register_secret
from odoo_upgrade.request import secret_keys as keys
from odoo_upgrade.request.ssh_keys import SshKeyPair, generate_ssh_keypair

if TYPE_CHECKING:
    from odoo_upgrade.transfer import HostKeyCheck


class SftpGranting(Protocol):
    """The platform call that opens SFTP for a request (v1 `request_sftp_access`)."""

    async def request_sftp_access(self, request_id: int, key: str, ssh_keys: str) -> SftpAccess:
        """Let the given authorized_keys text in; where and as whom to connect."""
        ...


@dataclass(frozen=True, repr=False)
class SftpGrant:
    """Where to connect and with which key pair."""

    access: SftpAccess
    keypair: SshKeyPair

    def __repr__(self) -> str:
        return f"SftpGrant(host={self.access.hostname}:{self.access.port})"

    def secret_values(self, *, download: bool = False) -> dict[str, str]:
        """The grant as request Secret values (`download`: the grant asked once done)."""
        return {
            keys.SSH_PRIVATE_KEY: self.keypair.private_pem,
            keys.SSH_PUBLIC_KEY: self.keypair.public_line,
            keys.SFTP_DOWNLOAD_ACCESS if download else keys.SFTP_ACCESS: json.dumps(
                self.access.to_json()
            ),
        }


async def grant_sftp_access(
    platform: SftpGranting, request_id: int, key: str, keypair: SshKeyPair | None = None
) -> SftpGrant:
    """Ask the platform to let a key pair in (a new one unless given)."""
    keypair = keypair or generate_ssh_keypair()
    register_secret(keypair.private_pem)
    access = await platform.request_sftp_access(request_id, key, keypair.public_line + "\n")
    return SftpGrant(access, keypair)


def host_key_check(
    pinned: str | None, recorded: str | None, on_first_use: Callable[[str], None]
) -> HostKeyCheck:
    """The key the user pinned; else the one recorded on first use; else trust on first use."""
    from odoo_upgrade.transfer import HostKeyCheck  # paramiko: only where a transfer runs

    known = (pinned or "").strip() or (recorded or "").strip()
    if known:
        return HostKeyCheck(pinned=known)
    return HostKeyCheck(on_first_use=on_first_use)
