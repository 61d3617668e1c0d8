"""Dump transfers: HTTPS, SFTP and rsync over SSH; resumable, hashed, atomic on disk.

Knows nothing of Kubernetes or kopf.
"""

from odoo_upgrade.transfer.errors import (
    DestinationExists,
    HostKeyMismatch,
    RemoteRefused,
    SizeMismatch,
    TransferError,
    TransferUnavailable,
)
from odoo_upgrade.transfer.https import download_https, upload_https
from odoo_upgrade.transfer.part_file import checksum_line, checksum_path, part_path
from odoo_upgrade.transfer.results import ProgressCallback, TransferResult
from odoo_upgrade.transfer.rsync import (
    DownloadedSet,
    RsyncEndpoint,
    RsyncUploadResult,
    SshHostKeyMismatch,
    download_rsync,
    upload_rsync,
)
from odoo_upgrade.transfer.sftp import download_sftp, upload_sftp
from odoo_upgrade.transfer.ssh_keys import (
    HostKeyCheck,
    SshKeyPair,
    fetch_host_key,
    fingerprint,
    generate_ssh_keypair,
)

__all__ = [
    "DestinationExists",
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
    "TransferError",
    "TransferResult",
    "TransferUnavailable",
    "checksum_line",
    "checksum_path",
    "download_https",
    "download_rsync",
    "download_sftp",
    "fetch_host_key",
    "fingerprint",
    "generate_ssh_keypair",
    "part_path",
    "upload_https",
    "upload_rsync",
    "upload_sftp",
]
