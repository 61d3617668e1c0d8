"""Dump transfers: HTTPS, SFTP and rsync over SSH; resumable, hashed, atomic on disk.

Knows nothing of Kubernetes or kopf.
"""

from odoo_upgrade.transfer.binding import DownloadBinding
from odoo_upgrade.transfer.errors import (
    DestinationExists,
    HostKeyMismatch,
    RemoteRefused,
    SizeMismatch,
    TransferError,
    TransferUnavailable,
)
from odoo_upgrade.transfer.https import download_https, upload_https
from odoo_upgrade.transfer.part_file import (
    checksum_line,
    checksum_path,
    part_path,
    published_download,
)
from odoo_upgrade.transfer.results import ProgressCallback, TransferResult
from odoo_upgrade.transfer.rsync import (
    DownloadedSet,
    RsyncEndpoint,
    RsyncUploadResult,
    SshHostKeyMismatch,
    download_rsync,
    upload_rsync,
)
from odoo_upgrade.transfer.sftp import connect_sftp, download_sftp, upload_sftp
from odoo_upgrade.transfer.ssh_keys import (
    HostKeyCheck,
    SshKeyPair,
    fetch_host_key,
    fingerprint,
    generate_ssh_keypair,
)
from odoo_upgrade.transfer.ssh_timeouts import SshTimeouts

__all__ = [
    "DestinationExists",
    "DownloadBinding",
    "DownloadedSet",
    "HostKeyCheck",
    "HostKeyMismatch",
    "ProgressCallback",
    "RemoteRefused",
    "RsyncEndpoint",
    "RsyncUploadResult",
    "SizeMismatch",
    "SshHostKeyMismatch",
    "SshKeyPair",
    "SshTimeouts",
    "TransferError",
    "TransferResult",
    "TransferUnavailable",
    "checksum_line",
    "checksum_path",
    "connect_sftp",
    "download_https",
    "download_rsync",
    "download_sftp",
    "fetch_host_key",
    "fingerprint",
    "generate_ssh_keypair",
    "part_path",
    "published_download",
    "upload_https",
    "upload_rsync",
    "upload_sftp",
]
