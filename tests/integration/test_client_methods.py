"""PlatformClient against the emulator over real HTTP on loopback: every method, every failure."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from odoo_upgrade.platform import (
    PlatformClient,
    PlatformFailure,
    PlatformNotReached,
    PlatformOutcomeUnknown,
    PlatformUnavailable,
    RetryPolicy,
    UpgradeRequest,
)
from odoo_upgrade.transfer import generate_ssh_keypair, upload_https
from tests.support.emulator import RunningEmulator, write_sample_dump

FAST = RetryPolicy(attempts=4, base_delay=0.01, max_delay=0.05)


def client_for(emulator: RunningEmulator, **options: object) -> PlatformClient:
    return PlatformClient(emulator.url, retry=FAST, **options)  # type: ignore[arg-type]


async def create(
    client: PlatformClient, emulator: RunningEmulator, **overrides: str
) -> UpgradeRequest:
    params = {
        "contract": emulator.contract,
        "email": "john.doe@example.com",
        "target": "18.0",
        "aim": "test",
        "filename": "db_name.dump",
        **overrides,
    }
    return await client.create(**params)


async def wait_until_final(client: PlatformClient, request: UpgradeRequest) -> UpgradeRequest:
    for _ in range(300):
        current = await client.status(request.id, request.key)
        if not current.in_progress:
            return current
        await asyncio.sleep(0.05)
    raise AssertionError(f"request {request.id} still {current.state}")


async def test_create_upload_process_status_reaches_done(
    emulator: RunningEmulator, tmp_path: Path
) -> None:
    async with client_for(emulator) as client:
        request = await create(client, emulator, timezone="Europe/Brussels")
        assert request.state == "draft"
        assert (request.target, request.aim, request.filename) == ("18.0", "test", "db_name.dump")
        dump = write_sample_dump(tmp_path / "db.dump", size=32 * 1024)
        await upload_https(emulator.url, request.id, request.key, dump, retry=FAST)
        await client.process(request.id, request.key)
        final = await wait_until_final(client, request)
    assert final.state == "done"
    assert final.upgraded_dump_url and f"/{request.id}/" in final.upgraded_dump_url
    assert [c["ok"] for c in emulator.calls("create")] == [True]


async def test_skip_test_delivers_a_production_request(
    make_emulator: Callable[..., RunningEmulator], tmp_path: Path
) -> None:
    emulator = make_emulator(process_seconds=0)
    async with client_for(emulator) as client:
        request = await create(client, emulator, aim="production")
        dump = write_sample_dump(tmp_path / "db.dump", size=16 * 1024)
        await upload_https(emulator.url, request.id, request.key, dump, retry=FAST)
        await client.process(request.id, request.key)
        await wait_until_final(client, request)
        await client.skip_test(request.id, request.key)
        after = await client.status(request.id, request.key)
    assert after.state == "delivered"


async def test_request_sftp_access_answers_connection_parameters(
    emulator: RunningEmulator,
) -> None:
    async with client_for(emulator) as client:
        request = await create(client, emulator)
        pair = generate_ssh_keypair()
        keys = f"# operator key\n\n{pair.public_line}\n"
        access = await client.request_sftp_access(request.id, request.key, keys)
    assert access.port == emulator.sftp_port
    assert access.user == f"user_{request.id}"
    assert access.shared_file == "db_name.dump"
    assert access.request_id == request.id


async def test_invalid_target_is_permanent_and_sent_once(emulator: RunningEmulator) -> None:
    async with client_for(emulator) as client:
        with pytest.raises(PlatformFailure) as caught:
            await create(client, emulator, target="5.0")
    assert caught.value.failures[0].reason == "TARGET:INVALID"
    assert caught.value.failures[0].value == "5.0"
    assert not caught.value.transient
    assert len(emulator.calls("create")) == 1


async def test_unknown_contract_is_permanent_and_sent_once(emulator: RunningEmulator) -> None:
    async with client_for(emulator) as client:
        with pytest.raises(PlatformFailure) as caught:
            await create(client, emulator, contract="M999999-unknown")
    assert caught.value.failures[0].reason == "CONTRACT:NOT_FOUND"
    assert not caught.value.transient
    assert len(emulator.calls("create")) == 1
    assert "M999999-unknown" not in str(caught.value)


async def test_server_errors_are_retried_until_success(
    make_emulator: Callable[..., RunningEmulator],
) -> None:
    emulator = make_emulator(fail_rate=0.5, fault_seed=3)
    patient = RetryPolicy(attempts=30, base_delay=0.001, max_delay=0.01)
    async with PlatformClient(emulator.url, retry=patient) as client:
        request = await create(client, emulator)
        for _ in range(5):
            assert (await client.status(request.id, request.key)).state == "draft"
    creates = emulator.calls("create")
    assert [c["ok"] for c in creates].count(True) == 1  # one request, whatever the retries
    assert any(not c["ok"] for c in emulator.calls())  # faults did happen and were retried


@pytest.mark.parametrize("method", ["create", "status"])
async def test_persistent_server_errors_give_up_after_exactly_the_attempts(
    make_emulator: Callable[..., RunningEmulator], method: str
) -> None:
    emulator = make_emulator(fail_rate=1.0)
    async with client_for(emulator) as client:
        with pytest.raises(PlatformUnavailable, match="SERVER:ERROR"):
            if method == "create":
                await create(client, emulator)
            else:
                await client.status(10534, "Aw7pItGVKFuZ_FOR3U8VFQ==")
    calls = emulator.calls(method)
    assert len(calls) == FAST.attempts
    assert not any(c["ok"] for c in calls)
    assert not (emulator.data_dir / "requests").exists() or not any(
        (emulator.data_dir / "requests").iterdir()
    )


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_unreachable_platform_is_retried_then_reported_unavailable() -> None:
    async with PlatformClient(f"http://127.0.0.1:{closed_port()}", retry=FAST) as client:
        with pytest.raises(PlatformNotReached, match="could not reach"):
            await client.create(
                contract="M123456-abcdef",
                email="a@b.c",
                target="18.0",
                aim="test",
                filename="db.dump",
            )


def abandoned_calls(emulator: RunningEmulator) -> int:
    """Calls whose client left during `--latency`: the emulator cannot read their body, does
    not record them in calls.jsonl, and logs the lost connection instead."""
    return emulator.log().count("Error handling request")


async def test_create_without_answer_is_not_repeated(
    make_emulator: Callable[..., RunningEmulator],
) -> None:
    emulator = make_emulator(latency=1.0)
    async with client_for(emulator, timeout=0.3) as client:
        with pytest.raises(PlatformOutcomeUnknown, match="outcome is unknown"):
            await create(client, emulator)
    await asyncio.sleep(1.5)  # let the emulator get to the call it was sent
    assert abandoned_calls(emulator) + len(emulator.calls("create")) == 1


async def test_status_read_timeouts_are_retried(
    make_emulator: Callable[..., RunningEmulator],
) -> None:
    emulator = make_emulator(latency=1.0)
    async with client_for(emulator, timeout=0.3) as client:
        with pytest.raises(PlatformUnavailable) as caught:
            await client.status(1, "Aw7pItGVKFuZ_FOR3U8VFQ==")
    assert not isinstance(caught.value, PlatformOutcomeUnknown)
    await asyncio.sleep(1.5)
    assert abandoned_calls(emulator) + len(emulator.calls("status")) == FAST.attempts
