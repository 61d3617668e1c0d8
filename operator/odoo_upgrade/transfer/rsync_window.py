"""One rsync transfer of an upgrade/request request, inside its transfer window.

`transfer/start` opens the SSH port (and names the host keys to trust), rsync moves the files,
`transfer/stop` closes the port — always, also when the transfer failed. The mover and
`odoo-upgrade run` both go through here, so the window is handled one way.
"""

from __future__ import annotations

import os

from odoo_upgrade.platform.upgrade_request import UpgradeRequestClient
from odoo_upgrade.request.upgraded import DEFAULT_DUMP_NAME
from odoo_upgrade.transfer.binding import DownloadBinding
from odoo_upgrade.transfer.results import ProgressCallback
from odoo_upgrade.transfer.rsync import (
    DownloadedSet,
    RsyncEndpoint,
    RsyncUploadResult,
    download_rsync,
    upload_rsync,
)


async def upload_through_window(
    client: UpgradeRequestClient,
    token: str,
    private_key_pem: str,
    source: str | os.PathLike[str],
    *,
    progress: ProgressCallback | None = None,
) -> RsyncUploadResult:
    """`transfer/start(upload)`, rsync `source` to `/data/`, `transfer/stop`."""
    async with client.transfer_window(token, "upload") as window:
        endpoint = RsyncEndpoint.for_window(client.request_host, window)
        return await upload_rsync(endpoint, private_key_pem, source, progress=progress)


async def download_through_window(
    client: UpgradeRequestClient,
    token: str,
    private_key_pem: str,
    destination: str | os.PathLike[str],
    *,
    progress: ProgressCallback | None = None,
    binding: DownloadBinding | None = None,
) -> DownloadedSet:
    """`transfer/start(download)`, rsync the upgraded set into the new directory
    `destination` (published whole, with SHA256SUMS), `transfer/stop`."""
    async with client.transfer_window(token, "download") as window:
        endpoint = RsyncEndpoint.for_window(client.request_host, window)
        return await download_rsync(
            endpoint,
            private_key_pem,
            destination,
            dump_name=window.dump_name or DEFAULT_DUMP_NAME,
            progress=progress,
            binding=binding,
        )
