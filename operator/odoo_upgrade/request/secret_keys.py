"""Key names of the request Secret `<name>-request` (docs/INTERNALS.md).

The operator writes them; the mover reads them as files of the mounted Secret; the CLI keeps
the same values in its state file. `key` (v1) and `token` (upgrade/request) are the request's
only secrets after `create`, with the SSH private key.
"""

from __future__ import annotations

REQUEST_ID = "requestId"
KEY = "key"
TOKEN = "token"  # noqa: S105
ASSIGNED_HOST = "assignedHost"
SSH_PRIVATE_KEY = "ssh-privatekey"
SSH_PUBLIC_KEY = "ssh-publickey"
SFTP_ACCESS = "sftp-access"  # JSON of the `request_sftp_access` answer (draft: the upload)
# JSON of `request_sftp_access` asked again once done: where `upgraded_<filename>` is served.
SFTP_DOWNLOAD_ACCESS = "sftp-download-access"
SFTP_HOST_KEY = "sftp-host-key"  # "<type> <base64>": pinned, or recorded on first use

# Values of the Secret that are not secrets: the host is shown in status, the others are
# public halves. Every other value is registered for redaction when read.
NOT_SECRET = frozenset({REQUEST_ID, ASSIGNED_HOST, SSH_PUBLIC_KEY, SFTP_HOST_KEY})
