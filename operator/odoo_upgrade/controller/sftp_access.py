"""SFTP access to a database/v1 request, asked by the operator before a mover needs it: for
the upload, and again for the download once the request is done; the grant goes into the
request Secret, where the mover Job reads it."""

from __future__ import annotations

from odoo_upgrade.controller.request_record import stored_request
from odoo_upgrade.controller.resource import Upgrade
from odoo_upgrade.controller.spec import UpgradeSpec
from odoo_upgrade.platform.v1 import DatabaseV1
from odoo_upgrade.request import secret_keys
from odoo_upgrade.request.sftp_grant import grant_sftp_access
from odoo_upgrade.request.ssh_keys import SshKeyPair
from odoo_upgrade.request.stored import StoredRequest


async def grant_sftp_upload(upgrade: Upgrade, spec: UpgradeSpec, stored: StoredRequest) -> None:
    """`request_sftp_access` with a new key pair; the grant (and a pinned host key) stored."""
    grant = await upgrade.platform_call(
        spec,
        "request_sftp_access",
        lambda p: grant_sftp_access(as_v1(p), stored.request_id, stored.key),
    )
    values = grant.secret_values()
    if spec.sftp_host_key:  # the mover pins exactly this key
        values[secret_keys.SFTP_HOST_KEY] = spec.sftp_host_key
    await upgrade.write_secret(values)
    how = "pinned" if spec.sftp_host_key else "trusted on first use"
    upgrade.event("Normal", "SftpAccessGranted", f"SFTP access granted (host key {how})")


async def grant_sftp_download(upgrade: Upgrade, spec: UpgradeSpec) -> None:
    """The SFTP download grant: `request_sftp_access` again now that the request is done,
    with the key pair the Secret holds (a new one if it has none), stored once."""
    stored = await stored_request(upgrade)
    if stored.sftp_download_access is not None:
        return
    keypair = None
    if stored.ssh_private_key and stored.ssh_public_key:
        keypair = SshKeyPair(stored.ssh_private_key, stored.ssh_public_key)
    grant = await upgrade.platform_call(
        spec,
        "request_sftp_access",
        lambda p: grant_sftp_access(as_v1(p), stored.request_id, stored.key, keypair),
    )
    values = grant.secret_values(download=True)
    if spec.sftp_host_key:  # the mover pins exactly this key
        values[secret_keys.SFTP_HOST_KEY] = spec.sftp_host_key
    await upgrade.write_secret(values)
    how = "trusted on first use"
    if spec.sftp_host_key or stored.sftp_host_key:
        how = "pinned" if spec.sftp_host_key else "as recorded at the upload"
    upgrade.event(
        "Normal",
        "SftpDownloadAccessGranted",
        f"SFTP access granted again for the download (host key {how})",
    )


def as_v1(platform: object) -> DatabaseV1:
    if not isinstance(platform, DatabaseV1):
        raise TypeError("SFTP access exists on the database/v1 API only")
    return platform
