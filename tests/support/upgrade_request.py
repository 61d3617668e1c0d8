"""Helpers for tests of the `upgrade/request` API: a client allowed to speak plain http to the
emulator, and the steps of a request (create, upload by rsync, process, wait).

    async with request_client(emu) as client:
        created = await create_request(client, emu, keys)
        await upload(client, created, keys, dump)
        await client.process(created.token)
        await wait_for_status(client, created.token, "done")
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from odoo_upgrade.platform import (
    CreatedRequest,
    RequestStatus,
    RetryPolicy,
    UpgradeRequestClient,
)
from odoo_upgrade.transfer import RsyncEndpoint, RsyncUploadResult, SshKeyPair, upload_rsync
from tests.support.emulator import RunningEmulator

FAST = RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.05)


def request_client(emu: RunningEmulator, **options: Any) -> UpgradeRequestClient:
    """A client of `emu` allowed plain http to its URL and to the host it assigns (only)."""
    insecure = {f"{emu.host}:{emu.port}", emu.assigned_host}
    options.setdefault("retry", FAST)
    return UpgradeRequestClient(emu.url, allow_insecure_hosts=insecure, **options)


async def create_request(
    client: UpgradeRequestClient, emu: RunningEmulator, keys: SshKeyPair, **overrides: Any
) -> CreatedRequest:
    """`create` with valid defaults (test upgrade to 18.0, the key pair's public half)."""
    params: dict[str, Any] = {
        "contract": emu.contract,
        "target": "18.0",
        "aim": "test",
        "ssh_key": keys.public_line,
        **overrides,
    }
    return await client.create(**params)


async def upload(
    client: UpgradeRequestClient, created: CreatedRequest, keys: SshKeyPair, dump: Path, **kw: Any
) -> RsyncUploadResult:
    """transfer/start(upload), rsync the dump, transfer/stop."""
    async with client.transfer_window(created.token, "upload") as window:
        endpoint = RsyncEndpoint.for_window(client.request_host, window)
        return await upload_rsync(endpoint, keys.private_pem, dump, **kw)


async def wait_for_status(
    client: UpgradeRequestClient, token: str, *states: str, timeout: float = 60.0
) -> RequestStatus:
    """Poll `status` until it is one of `states` (AssertionError after `timeout`)."""
    deadline = time.monotonic() + timeout
    while True:
        status = await client.status(token)
        if status.status in states:
            return status
        if time.monotonic() > deadline:
            raise AssertionError(f"still {status.status!r} after {timeout}s, wanted {states}")
        await asyncio.sleep(0.1)
