"""The `upgrade/request` client against the emulator over loopback: the host switch, states,
the log by byte range, refusals and faults, and the exactly-once rule of `create`."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from aiohttp import web

from odoo_upgrade.platform import (
    PlatformFailure,
    PlatformOutcomeUnknown,
    PlatformProtocolError,
    PlatformServerError,
    PlatformUnavailable,
    RetryPolicy,
    UpgradeRequestClient,
)
from odoo_upgrade.transfer import SshKeyPair, generate_ssh_keypair
from tests.support.emulator import (
    RunningEmulator,
    write_directory_dump,
    write_sample_dump,
)
from tests.support.upgrade_request import create_request, request_client, upload, wait_for_status


@pytest.fixture
def keys() -> SshKeyPair:
    return generate_ssh_keypair()


def request_calls(emu: RunningEmulator) -> list[dict[str, object]]:
    return [c for c in emu.calls() if str(c["method"]).startswith("upgrade/request/")]


async def test_calls_after_create_go_to_the_assigned_host(
    make_emulator: Callable[..., RunningEmulator], tmp_path: Path, keys: SshKeyPair
) -> None:
    emu = make_emulator(process_seconds=0)
    # Same process, another name: `create` at 127.0.0.1, everything after at localhost.
    emu.restart(assigned_host=f"localhost:{emu.port}")
    dump = write_directory_dump(tmp_path / "db.dump")
    async with request_client(emu) as client:
        assert client.method_url("create").startswith(f"http://127.0.0.1:{emu.port}/")
        created = await create_request(client, emu, keys)
        assert created.assigned_host_uri == f"localhost:{emu.port}"
        assert client.method_url("status") == f"http://localhost:{emu.port}/upgrade/request/status"
        await upload(client, created, keys, dump)
        await client.process(created.token)
        status = await wait_for_status(client, created.token, "done")
        await client.logs(created.token)
    assert status.host_uri == f"localhost:{emu.port}"
    hosts = [(c["method"], c["host"]) for c in request_calls(emu)]
    assert hosts[0] == ("upgrade/request/create", f"127.0.0.1:{emu.port}")
    assert len(hosts) > 4
    assert {host for _, host in hosts[1:]} == {f"localhost:{emu.port}"}
    sessions = [c for c in emu.calls() if c["method"] == "rsync-upload"]
    assert [s["ok"] for s in sessions] == [True]


async def test_an_assigned_host_not_allowed_plain_http_is_only_spoken_to_in_https(
    emulator: RunningEmulator, keys: SshKeyPair
) -> None:
    emulator.restart(assigned_host=f"localhost:{emulator.port}")
    async with UpgradeRequestClient(
        emulator.url,
        allow_insecure_hosts={f"127.0.0.1:{emulator.port}"},
        retry=RetryPolicy(attempts=1),
    ) as client:
        created = await create_request(client, emulator, keys)
        assert client.method_url("status").startswith("https://localhost:")
        with pytest.raises(PlatformUnavailable):
            await client.status(created.token)  # TLS to a plain http server: no answer
    assert [c["method"] for c in request_calls(emulator)] == ["upgrade/request/create"]


async def test_plain_http_platform_url_is_refused_unless_allowed(emulator: RunningEmulator) -> None:
    with pytest.raises(ValueError, match="only https is allowed"):
        UpgradeRequestClient(emulator.url)


async def test_states_run_new_pending_progress_done_with_a_growing_log(
    make_emulator: Callable[..., RunningEmulator], tmp_path: Path, keys: SshKeyPair
) -> None:
    emu = make_emulator(process_seconds=3)
    dump = write_sample_dump(tmp_path / "db.dump")
    async with request_client(emu) as client:
        created = await create_request(client, emu, keys)
        assert (await client.status(created.token)).status == "new"
        await upload(client, created, keys, dump)
        assert await client.process(created.token) is True
        seen: list[str] = []
        offsets: list[int] = []
        log_text = ""
        offset = 0
        while True:
            status = await client.status(created.token)
            if not seen or seen[-1] != status.status:
                seen.append(status.status)
            text, offset = await client.logs(created.token, offset)
            log_text += text
            offsets.append(offset)
            if not status.in_progress:
                break
            await asyncio.sleep(0.1)
        text, offset = await client.logs(created.token, offset)
        log_text += text
        whole, end = await client.logs(created.token, 0)
        nothing_new = await client.logs(created.token, end)
    assert seen == ["pending", "progress", "done"]
    assert status.succeeded and not status.archived and status.reason is None
    # Tailed piece by piece, the log is exactly the whole log.
    assert log_text == whole and end == len(whole.encode())
    assert len(set(offsets)) > 2, "the log should grow while in progress"
    assert whole.splitlines()[-1].endswith("upgrade to 18.0 done")
    assert nothing_new == ("", end)


async def test_log_served_by_byte_range(shared_emulator: RunningEmulator) -> None:
    keys = generate_ssh_keypair()
    async with request_client(shared_emulator) as client:
        created = await create_request(client, shared_emulator, keys)
        whole, end = await client.logs(created.token, 0)
    url = f"{shared_emulator.url}/upgrade/request/logs?token={created.token}"
    request = urllib.request.Request(url, headers={"Range": "bytes=5-"})  # noqa: S310
    with urllib.request.urlopen(request) as response:  # noqa: S310
        assert response.status == 206
        assert response.headers["Content-Range"] == f"bytes 5-{end - 1}/{end}"
        assert response.read() == whole.encode()[5:]
    request = urllib.request.Request(url, headers={"Range": f"bytes={end}-"})  # noqa: S310
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request)  # noqa: S310
    assert refused.value.code == 416


async def test_unreadable_dump_ends_failed_with_a_reason(
    emulator: RunningEmulator, tmp_path: Path, keys: SshKeyPair
) -> None:
    junk = tmp_path / "junk.sql"
    junk.write_bytes(b"\x00\x01 not a dump at all" * 100)
    async with request_client(emulator) as client:
        created = await create_request(client, emulator, keys)
        await upload(client, created, keys, junk, remote_name="origin.sql")
        await client.process(created.token)
        status = await wait_for_status(client, created.token, "failed", "done")
        log_text, _ = await client.logs(created.token)
    assert status.status == "failed"
    assert status.reason is not None and "not a valid database dump" in status.reason
    assert status.reason in log_text.splitlines()[-1]


async def test_failure_marker_ends_failed_with_its_reason(
    emulator: RunningEmulator, tmp_path: Path, keys: SshKeyPair
) -> None:
    dump = write_sample_dump(tmp_path / "db.dump")
    async with request_client(emulator) as client:
        created = await create_request(
            client, emulator, keys, env_vars=["ODOO_UPGRADE_EMULATOR_FAIL=module foo is broken"]
        )
        await upload(client, created, keys, dump)
        await client.process(created.token)
        status = await wait_for_status(client, created.token, "failed", "done")
        with pytest.raises(PlatformFailure, match='state "failed"'):
            await client.transfer_start(created.token, "download")
    assert (status.status, status.reason) == ("failed", "module foo is broken")


async def test_cancelled_from_outside_and_by_marker(
    make_emulator: Callable[..., RunningEmulator], tmp_path: Path, keys: SshKeyPair
) -> None:
    emu = make_emulator(process_seconds=30)
    dump = write_sample_dump(tmp_path / "db.dump")
    async with request_client(emu) as client:
        by_admin = await create_request(client, emu, keys)
        await upload(client, by_admin, keys, dump)
        await client.process(by_admin.token)
        assert (await client.status(by_admin.token)).in_progress
        assert emu.cancel_request(by_admin.request_id)["status"] == "cancelled"
        cancelled = await client.status(by_admin.token)
        log_text, _ = await client.logs(by_admin.token)
    assert cancelled.status == "cancelled" and not cancelled.in_progress
    assert "cancelled" in log_text.splitlines()[-1]

    quick = make_emulator(process_seconds=1)
    async with request_client(quick) as client:
        by_marker = await create_request(
            client, quick, keys, env_vars=["ODOO_UPGRADE_EMULATOR_CANCEL=1"]
        )
        await upload(client, by_marker, keys, dump)
        await client.process(by_marker.token)
        status = await wait_for_status(client, by_marker.token, "cancelled", "done")
    assert status.status == "cancelled"


async def test_process_tells_whether_the_postgresql_versions_are_compatible(
    shared_emulator: RunningEmulator, tmp_path: Path, keys: SshKeyPair
) -> None:
    dump = write_sample_dump(tmp_path / "db.dump")
    async with request_client(shared_emulator) as client:
        created = await create_request(
            client, shared_emulator, keys, env_vars=["ODOO_UPGRADE_EMULATOR_PG_INCOMPATIBLE=1"]
        )
        await upload(client, created, keys, dump)
        assert await client.process(created.token) is False
        assert await client.process(created.token) is False  # asked again: same answer


async def test_refusals_are_permanent_failures_with_the_platform_message(
    shared_emulator: RunningEmulator, keys: SshKeyPair
) -> None:
    async with request_client(shared_emulator) as client:
        with pytest.raises(PlatformFailure) as contract:
            await create_request(client, shared_emulator, keys, contract="M999999-nosuchcontract")
        with pytest.raises(PlatformFailure) as target:
            await create_request(client, shared_emulator, keys, target="3.0")
        created = await create_request(client, shared_emulator, keys)
        with pytest.raises(PlatformFailure) as no_dump:
            await client.process(created.token)
        with pytest.raises(PlatformFailure) as token:
            await client.status("not-a-token-of-this-platform")
    assert not contract.value.transient
    assert contract.value.failures[0].reason == "REQUEST:ERROR"
    assert "contract" in contract.value.failures[0].message
    assert "M999999-nosuchcontract" not in str(contract.value)
    assert "Invalid target version" in str(target.value)
    assert "No dump was uploaded" in str(no_dump.value)
    # An unknown token comes back as a JSON-RPC error object: message from error.data.message.
    assert token.value.failures[0].reason == "JSONRPC:ERROR"
    assert token.value.failures[0].message == "No upgrade request matches this token"
    assert not token.value.transient


async def test_wipe_deletes_the_contracts_dumps_and_archives_the_requests(
    make_emulator: Callable[..., RunningEmulator], tmp_path: Path, keys: SshKeyPair
) -> None:
    emu = make_emulator(process_seconds=0)
    dump = write_sample_dump(tmp_path / "db.dump")
    async with request_client(emu) as client:
        created = await create_request(client, emu, keys)
        await upload(client, created, keys, dump)
        await client.process(created.token)
        await wait_for_status(client, created.token, "done")
        assert emu.request_data(created.request_id).exists()
        wiped = await client.wipe(emu.contract, created.token)
        status = await client.status(created.token)
    assert wiped.wiped == [str(created.request_id)] and wiped.failed == []
    assert status.archived
    assert not emu.request_data(created.request_id).exists()


async def test_server_errors_are_retried_and_create_only_when_the_platform_did_not_act(
    make_emulator: Callable[..., RunningEmulator], keys: SshKeyPair
) -> None:
    emu = make_emulator(fail_rate=1.0)
    async with request_client(emu, retry=RetryPolicy(attempts=3, base_delay=0.01)) as client:
        with pytest.raises(PlatformServerError):
            await create_request(client, emu, keys)
    # 503 answers come before acting: retried (3 tries), and no request exists.
    assert [c["status"] for c in request_calls(emu)] == [503, 503, 503]
    assert not list((emu.data_dir / "upgrade-requests").glob("*/request.json"))


async def test_create_without_an_answer_is_never_sent_twice(
    make_emulator: Callable[..., RunningEmulator], keys: SshKeyPair
) -> None:
    emu = make_emulator(latency=1.5)
    async with request_client(
        emu, timeout=0.5, retry=RetryPolicy(attempts=5, base_delay=0.01)
    ) as client:
        with pytest.raises(PlatformOutcomeUnknown) as unknown:
            await create_request(client, emu, keys)
    assert not unknown.value.transient
    await asyncio.sleep(2.0)  # let the emulator get to the call it was sent
    creates = [c for c in request_calls(emu) if c["method"] == "upgrade/request/create"]
    # The client left during --latency: the emulator cannot read the body, and logs that.
    abandoned = emu.log().count("Error handling request")
    assert abandoned + len(creates) == 1, emu.log()


async def test_status_is_retried_through_slow_and_failing_answers(
    make_emulator: Callable[..., RunningEmulator], keys: SshKeyPair
) -> None:
    emu = make_emulator(fail_rate=0.5, fault_seed=7, latency=0.05)
    async with request_client(emu, retry=RetryPolicy(attempts=20, base_delay=0.01)) as client:
        created = await create_request(client, emu, keys)
        for _ in range(5):
            assert (await client.status(created.token)).status == "new"
    statuses = [c["status"] for c in request_calls(emu)]
    assert 503 in statuses and statuses.count(200) == 6


# -- answers that are not the documented shape (a real HTTP server on loopback) -------------


Answer = Callable[[], web.Response]


@pytest.fixture
async def odd_platform() -> AsyncIterator[tuple[str, dict[str, Answer]]]:
    """An aiohttp server whose answers a test sets per path (`answers["create"] = ...`)."""
    answers: dict[str, Answer] = {}

    async def handler(request: web.Request) -> web.StreamResponse:
        return answers[request.match_info["method"]]()

    app = web.Application()
    app.router.add_route("*", "/upgrade/request/{method:.+}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"127.0.0.1:{port}", answers
    await runner.cleanup()


async def test_oversized_and_malformed_answers_are_protocol_errors(
    odd_platform: tuple[str, dict[str, Answer]],
) -> None:
    host, answers = odd_platform
    huge = json.dumps({"result": {"status": "new", "padding": "x" * (2 << 20)}})
    answers["status"] = lambda: web.Response(text=huge, content_type="application/json")
    answers["process"] = lambda: web.Response(
        text="<html>not json</html>", content_type="text/html"
    )
    answers["transfer/start"] = lambda: web.json_response({"result": {"known_hosts": "x"}})
    answers["create"] = lambda: web.json_response(
        {"result": {"request_id": 1, "token": "t0k3n-abcdef", "assigned_host_uri": "evil/x"}}
    )
    async with UpgradeRequestClient(
        f"http://{host}", assigned_host_uri=host, allow_insecure_hosts={host}
    ) as client:
        with pytest.raises(PlatformProtocolError, match="exceeds 1048576 bytes"):
            await client.status("t0k3n-abcdef")
        with pytest.raises(PlatformProtocolError, match="not JSON"):
            await client.process("t0k3n-abcdef")
        with pytest.raises(PlatformProtocolError, match="ssh_port"):
            await client.transfer_start("t0k3n-abcdef", "upload")
        with pytest.raises(PlatformProtocolError, match="bare host"):
            await client.create(contract="M1-abcdefgh", target="18.0", aim="test", ssh_key="k")


async def test_gateway_errors_leave_create_outcome_unknown(
    odd_platform: tuple[str, dict[str, Answer]],
) -> None:
    host, answers = odd_platform
    answers["create"] = lambda: web.Response(status=502, text="bad gateway")
    answers["status"] = lambda: web.Response(status=504, text="gateway timeout")
    async with UpgradeRequestClient(
        f"http://{host}",
        allow_insecure_hosts={host},
        retry=RetryPolicy(attempts=3, base_delay=0.01),
    ) as client:
        with pytest.raises(PlatformOutcomeUnknown):
            await client.create(contract="M1-abcdefgh", target="18.0", aim="test", ssh_key="k")
        with pytest.raises(PlatformUnavailable) as status:
            await client.status("t0k3n-abcdef")
    assert status.value.transient


async def test_redirects_are_not_followed(
    odd_platform: tuple[str, dict[str, Answer]],
) -> None:
    host, answers = odd_platform
    answers["status"] = lambda: web.Response(
        status=307, headers={"Location": "http://example.com/"}
    )
    async with UpgradeRequestClient(
        f"http://{host}", assigned_host_uri=host, allow_insecure_hosts={host}
    ) as client:
        with pytest.raises(PlatformProtocolError):
            await client.status("t0k3n-abcdef")


async def test_a_restarted_emulator_carries_on_to_done(
    make_emulator: Callable[..., RunningEmulator], tmp_path: Path, keys: SshKeyPair
) -> None:
    emu = make_emulator(process_seconds=2)
    async with request_client(emu) as client:
        created = await create_request(client, emu, keys)
        await upload(client, created, keys, write_sample_dump(tmp_path / "db.dump"))
        await client.process(created.token)
        emu.kill()  # mid-processing, before the upgraded set exists
        emu.start()
        status = await wait_for_status(client, created.token, "done", "failed")
    assert status.status == "done"
    assert (emu.request_data(created.request_id) / "upgraded.dump").is_dir()
