"""How much of the dump has reached the platform, seen over SFTP with the request's key pair.

The mover has no API token, so it cannot write progress into status; for SFTP uploads the
operator looks at the shared file's size on the platform itself (the only progress that is real
at the platform's end). Blocking (paramiko): call it in a thread.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import paramiko

from odoo_upgrade.transfer import HostKeyCheck, TransferError
from odoo_upgrade.transfer.ssh_keys import load_private_key, start_transport


def remote_size(secret: Mapping[str, str]) -> int | None:
    """Size of the shared file on the platform's SFTP server, or None if it cannot be seen.

    The host key recorded in the request Secret must match: an unknown host never sees the key.
    """
    try:
        access = json.loads(secret["sftp-access"])
        hostname, port = str(access["hostname"]), int(access["sftp_port"])
        check = HostKeyCheck(pinned=secret["sftp-host-key"])
        private_key = load_private_key(secret["ssh-privatekey"])
    except (KeyError, ValueError, TransferError):
        return None
    try:
        transport = start_transport(hostname, port, pinned=check.pinned)
    except TransferError:
        return None
    try:
        check.verify(hostname, port, transport.get_remote_server_key())
        transport.auth_publickey(str(access["sftp_user"]), private_key)
        sftp = paramiko.SFTPClient.from_transport(transport)
        if sftp is None:
            return None
        try:
            return int(sftp.stat(str(access["shared_file"])).st_size or 0)
        except FileNotFoundError:
            return 0
    except (TransferError, paramiko.SSHException, OSError, EOFError):
        return None
    finally:
        transport.close()
