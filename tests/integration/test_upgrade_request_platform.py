"""`UpgradeRequestPlatform`: the upgrade/request client as the request core's `Platform`."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from odoo_upgrade.platform.upgrade_request import CreatedRequest
from odoo_upgrade.platform.upgrade_request_platform import PUBLIC_KEYS, UpgradeRequestPlatform
from odoo_upgrade.request import secret_keys as keys
from odoo_upgrade.request.platform import Platform, PlatformStatus, RequestOrder, RequestRef
from odoo_upgrade.request.states import StateClass
from odoo_upgrade.transfer import generate_ssh_keypair
from tests.support.emulator import RunningEmulator, write_sample_dump
from tests.support.upgrade_request import FAST, request_client, upload


def of_client(ref: RequestRef) -> CreatedRequest:
    """The same request as the client's own `create` would have answered it."""
    assert ref.host is not None
    return CreatedRequest(ref.request_id, ref.secret, ref.host)


async def final_status(platform: Platform, ref: RequestRef) -> PlatformStatus:
    for _ in range(300):
        status = await platform.status(ref)
        if status.state_class in (StateClass.SUCCEEDED, StateClass.FAILED):
            return status
        await asyncio.sleep(0.1)
    raise AssertionError("the request did not end")


async def test_create_status_and_process_through_the_platform_protocol(
    make_emulator: Callable[..., RunningEmulator], tmp_path: Path
) -> None:
    emu = make_emulator(process_seconds=1)
    emu.restart(assigned_host=f"localhost:{emu.port}")
    pair = generate_ssh_keypair()
    order = RequestOrder(
        contract=emu.contract,
        email="ops@example.com",
        target="18.0",
        aim="production",
        filename="db.dump",
        env_vars=("ODOO_UPGRADE_EMULATOR_PG_INCOMPATIBLE=1",),
        ssh_public_key=pair.public_line,
    )
    insecure = {f"127.0.0.1:{emu.port}", f"localhost:{emu.port}"}
    platform: Platform
    async with UpgradeRequestPlatform(
        emu.url, allow_insecure_hosts=insecure, retry=FAST
    ) as platform:
        created = await platform.create(order)
        assert created.ref.host == f"localhost:{emu.port}"
        assert set(created.secret_values) == {keys.REQUEST_ID, keys.TOKEN, keys.ASSIGNED_HOST}
        assert created.info and "production" in created.info
        assert created.ref.secret not in repr(created)
        waiting = await platform.status(created.ref)
        assert waiting.state_class is StateClass.AWAITING_DUMP
        async with request_client(emu, assigned_host_uri=created.ref.host) as client:
            await upload(client, of_client(created.ref), pair, write_sample_dump(tmp_path / "d"))
        assert await platform.process(created.ref) == {"pgVersionCompatible": False}
        done = await final_status(platform, created.ref)
    assert done.state_class is StateClass.SUCCEEDED
    assert done.public == {
        "state": "done",
        "reason": None,
        "archived": False,
        "assignedHost": f"localhost:{emu.port}",
    }
    assert tuple(done.public) == PUBLIC_KEYS
    hosts = {c["host"] for c in emu.calls() if c["method"] == "upgrade/request/status"}
    assert hosts == {f"localhost:{emu.port}"}


async def test_failed_request_reports_the_reason(
    make_emulator: Callable[..., RunningEmulator], tmp_path: Path
) -> None:
    emu = make_emulator(process_seconds=0.5)
    pair = generate_ssh_keypair()
    order = RequestOrder(
        contract=emu.contract,
        email="ops@example.com",
        target="18.0",
        aim="test",
        filename="db.dump",
        env_vars=("ODOO_UPGRADE_EMULATOR_FAIL=base module broken",),
        ssh_public_key=pair.public_line,
    )
    async with UpgradeRequestPlatform(
        emu.url, allow_insecure_hosts={emu.assigned_host}, retry=FAST
    ) as platform:
        created = await platform.create(order)
        async with request_client(emu, assigned_host_uri=created.ref.host) as client:
            await upload(client, of_client(created.ref), pair, write_sample_dump(tmp_path / "d"))
        await platform.process(created.ref)
        failed = await final_status(platform, created.ref)
    assert failed.state_class is StateClass.FAILED
    assert failed.message == "base module broken" and failed.public["reason"] == failed.message
