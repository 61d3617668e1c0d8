"""SFTP upload and download against the emulator's SFTP server on loopback."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from pathlib import Path

import paramiko
import pytest

from odoo_upgrade.platform import PlatformClient, RetryPolicy, SftpAccess
from odoo_upgrade.transfer import (
    DestinationExists,
    HostKeyCheck,
    HostKeyMismatch,
    RemoteRefused,
    SshKeyPair,
    TransferResult,
    download_sftp,
    fetch_host_key,
    fingerprint,
    generate_ssh_keypair,
    upload_https,
    upload_sftp,
)
from odoo_upgrade.transfer.part_file import part_path
from odoo_upgrade.transfer.ssh_keys import key_line
from tests.support.emulator import RunningEmulator, write_sample_dump

FAST = RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.05)
DUMP_SIZE = 256 * 1024
DROP_AFTER = 100_000
MIB = 1024 * 1024


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(autouse=True, params=["openssh", "paramiko"])
def sftp_client(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test twice: the bytes through OpenSSH's sftp (the default where it is installed),
    and through paramiko (where it is not: OpenSSH hidden from `client="auto"`)."""
    if request.param == "paramiko":
        monkeypatch.setattr("odoo_upgrade.transfer.openssh_sftp.sftp_program", lambda: None)
    return str(request.param)


async def sftp_access(
    emulator: RunningEmulator, request: dict[str, object], pair: SshKeyPair
) -> SftpAccess:
    async with PlatformClient(emulator.url, retry=FAST) as client:
        return await client.request_sftp_access(
            int(str(request["id"])), str(request["key"]), pair.public_line + "\n"
        )


async def test_upload_resumes_from_the_remote_size_after_a_cut(
    make_emulator: Callable[..., RunningEmulator], tmp_path: Path
) -> None:
    emulator = make_emulator(drop_after_bytes=DROP_AFTER)
    request = emulator.create_request()
    pair = generate_ssh_keypair()
    access = await sftp_access(emulator, request, pair)
    dump = write_sample_dump(tmp_path / "db.dump", size=DUMP_SIZE)
    seen: list[int] = []
    result = await asyncio.to_thread(
        upload_sftp,
        access,
        pair.private_pem,
        dump,
        host_key=HostKeyCheck(pinned=emulator.host_key_line()),
        progress=lambda done, total: seen.append(done),
    )
    assert result.attempts == 2
    assert result.bytes == dump.stat().st_size
    assert result.sha256 == sha256(dump.read_bytes())
    assert emulator.original_path(int(str(request["id"]))).read_bytes() == dump.read_bytes()
    assert seen[-1] == dump.stat().st_size


async def test_upload_appends_to_what_the_server_already_holds(
    emulator: RunningEmulator, tmp_path: Path
) -> None:
    request = emulator.create_request()
    pair = generate_ssh_keypair()
    access = await sftp_access(emulator, request, pair)
    check = HostKeyCheck(pinned=emulator.host_key_line())
    # A marked prefix on the server shows that the upload continued it, like `put -a`.
    marked = tmp_path / "marked.dump"
    marked.write_bytes(b"Z" * 1000)
    await asyncio.to_thread(upload_sftp, access, pair.private_pem, marked, host_key=check)
    dump = write_sample_dump(tmp_path / "db.dump", size=32 * 1024)
    result = await asyncio.to_thread(upload_sftp, access, pair.private_pem, dump, host_key=check)
    remote = emulator.original_path(int(str(request["id"]))).read_bytes()
    assert remote == b"Z" * 1000 + dump.read_bytes()[1000:]
    assert result.sha256 == sha256(dump.read_bytes())  # the local file's hash, whole


async def test_upload_of_a_finished_file_just_confirms_it(
    emulator: RunningEmulator, tmp_path: Path
) -> None:
    request = emulator.create_request()
    pair = generate_ssh_keypair()
    access = await sftp_access(emulator, request, pair)
    dump = write_sample_dump(tmp_path / "db.dump", size=32 * 1024)
    check = HostKeyCheck(pinned=emulator.host_key_line())
    await asyncio.to_thread(upload_sftp, access, pair.private_pem, dump, host_key=check)
    again = await asyncio.to_thread(upload_sftp, access, pair.private_pem, dump, host_key=check)
    assert again.sha256 == sha256(dump.read_bytes())
    assert emulator.original_path(int(str(request["id"]))).read_bytes() == dump.read_bytes()


async def test_pinned_host_key_mismatch_is_refused_before_login(
    emulator: RunningEmulator, tmp_path: Path
) -> None:
    request = emulator.create_request()
    pair = generate_ssh_keypair()
    access = await sftp_access(emulator, request, pair)
    dump = write_sample_dump(tmp_path / "db.dump", size=16 * 1024)
    impostor = generate_ssh_keypair().public_line
    with pytest.raises(HostKeyMismatch) as caught:
        await asyncio.to_thread(
            upload_sftp, access, pair.private_pem, dump, host_key=HostKeyCheck(pinned=impostor)
        )
    text = str(caught.value)
    assert f"127.0.0.1:{emulator.sftp_port}" in text
    assert fingerprint(impostor) in text and fingerprint(emulator.host_key_line()) in text
    assert "PRIVATE" not in text
    original = emulator.original_path(int(str(request["id"])))
    assert not original.exists() or original.stat().st_size == 0


async def test_pinned_key_of_a_type_the_server_lacks_is_refused(
    emulator: RunningEmulator, tmp_path: Path
) -> None:
    request = emulator.create_request()
    pair = generate_ssh_keypair()
    access = await sftp_access(emulator, request, pair)
    dump = write_sample_dump(tmp_path / "db.dump", size=16 * 1024)
    ecdsa = key_line(paramiko.ECDSAKey.generate())
    with pytest.raises(HostKeyMismatch, match="no ecdsa-sha2-nistp256 host key") as caught:
        await asyncio.to_thread(
            upload_sftp, access, pair.private_pem, dump, host_key=HostKeyCheck(pinned=ecdsa)
        )
    assert not caught.value.transient


async def test_trust_on_first_use_records_the_servers_key(
    emulator: RunningEmulator, tmp_path: Path
) -> None:
    request = emulator.create_request()
    pair = generate_ssh_keypair()
    access = await sftp_access(emulator, request, pair)
    dump = write_sample_dump(tmp_path / "db.dump", size=16 * 1024)
    recorded: list[str] = []
    await asyncio.to_thread(
        upload_sftp,
        access,
        pair.private_pem,
        dump,
        host_key=HostKeyCheck(on_first_use=recorded.append),
    )
    assert recorded == [emulator.host_key_line()]


def test_fetch_host_key_reads_the_servers_key_without_login(emulator: RunningEmulator) -> None:
    assert fetch_host_key("127.0.0.1", emulator.sftp_port) == emulator.host_key_line()


async def test_a_key_not_granted_access_is_refused_permanently(
    emulator: RunningEmulator, tmp_path: Path
) -> None:
    request = emulator.create_request()
    access = await sftp_access(emulator, request, generate_ssh_keypair())
    stranger = generate_ssh_keypair()
    dump = write_sample_dump(tmp_path / "db.dump", size=16 * 1024)
    with pytest.raises(RemoteRefused, match=access.user) as caught:
        await asyncio.to_thread(
            upload_sftp,
            access,
            stranger.private_pem,
            dump,
            host_key=HostKeyCheck(pinned=emulator.host_key_line()),
        )
    assert not caught.value.transient


async def done_request_with_sftp(
    emulator: RunningEmulator, tmp_path: Path, size: int = DUMP_SIZE
) -> tuple[dict[str, object], SftpAccess, SshKeyPair]:
    request = emulator.create_request()
    dump = write_sample_dump(tmp_path / "source.dump", size=size)
    await upload_https(emulator.url, request["id"], request["key"], dump, retry=FAST)
    emulator.api("process", request=request["id"], key=request["key"])
    emulator.wait_for_state(int(str(request["id"])), str(request["key"]), "done")
    pair = generate_ssh_keypair()
    return request, await sftp_access(emulator, request, pair), pair


async def download_upgraded(
    emulator: RunningEmulator, access: SftpAccess, pair: SshKeyPair, dest: Path
) -> TransferResult:
    """`download_sftp` of the request's upgraded file, the emulator's host key pinned."""
    return await asyncio.to_thread(
        download_sftp,
        access,
        pair.private_pem,
        f"upgraded_{access.shared_file}",
        dest,
        host_key=HostKeyCheck(pinned=emulator.host_key_line()),
    )


async def test_download_resumes_after_a_cut_and_matches_the_upgraded_file(
    make_emulator: Callable[..., RunningEmulator], tmp_path: Path
) -> None:
    emulator = make_emulator(process_seconds=0, drop_after_bytes=DROP_AFTER)
    request, access, pair = await done_request_with_sftp(emulator, tmp_path)
    expected = emulator.upgraded_bytes(int(str(request["id"])))
    assert len(expected) > DROP_AFTER
    dest = tmp_path / "upgraded.zip"
    result = await download_upgraded(emulator, access, pair, dest)
    assert result.attempts == 2
    assert dest.read_bytes() == expected
    assert result.sha256 == sha256(expected)
    assert (tmp_path / "upgraded.zip.sha256").read_text() == f"{sha256(expected)}  upgraded.zip\n"
    assert not part_path(dest).exists()


async def test_download_rerun_continues_the_part_left_by_a_crash(
    make_emulator: Callable[..., RunningEmulator], tmp_path: Path
) -> None:
    emulator = make_emulator(process_seconds=0)
    request, access, pair = await done_request_with_sftp(emulator, tmp_path, size=3 * MIB)
    expected = emulator.upgraded_bytes(int(str(request["id"])))
    dest = tmp_path / "upgraded.zip"
    # A marked prefix shows that the part was continued, not fetched again from byte 0; its
    # last UNSETTLED bytes are fetched again (what a killed sftp may have left holes in).
    kept = 2 * MIB + 512 * 1024
    part_path(dest).write_bytes(b"Z" * 1000 + expected[1000:kept])
    result = await download_upgraded(emulator, access, pair, dest)
    assert dest.read_bytes() == b"Z" * 1000 + expected[1000:]
    assert result.sha256 == sha256(dest.read_bytes())


async def test_download_rerun_fetches_again_the_tail_a_killed_sftp_may_have_left_holes_in(
    make_emulator: Callable[..., RunningEmulator], tmp_path: Path
) -> None:
    """OpenSSH's sftp writes answers at their offsets as they come, and cuts the file back to
    its contiguous bytes only when it exits by itself: after a SIGKILL (the pod killed) the
    part may end with a hole (zeros) below its last bytes, which a resume from its size would
    publish inside the dump."""
    emulator = make_emulator(process_seconds=0)
    request, access, pair = await done_request_with_sftp(emulator, tmp_path)
    expected = emulator.upgraded_bytes(int(str(request["id"])))
    dest = tmp_path / "upgraded.zip"
    holed = bytearray(expected[:200_000])
    holed[120_000 : 120_000 + 32 * 1024] = bytes(32 * 1024)  # one request never answered
    part_path(dest).write_bytes(holed)
    result = await download_upgraded(emulator, access, pair, dest)
    assert dest.read_bytes() == expected
    assert result.sha256 == sha256(expected)


async def test_download_never_overwrites_an_existing_destination(
    make_emulator: Callable[..., RunningEmulator], tmp_path: Path
) -> None:
    emulator = make_emulator(process_seconds=0)
    _, access, pair = await done_request_with_sftp(emulator, tmp_path)
    dest = tmp_path / "upgraded.zip"
    dest.write_bytes(b"precious")
    with pytest.raises(DestinationExists):
        await download_upgraded(emulator, access, pair, dest)
    assert dest.read_bytes() == b"precious"
    assert not part_path(dest).exists()


async def test_download_of_a_file_not_offered_is_refused(
    make_emulator: Callable[..., RunningEmulator], tmp_path: Path
) -> None:
    emulator = make_emulator(process_seconds=0)
    _, access, pair = await done_request_with_sftp(emulator, tmp_path)
    dest = tmp_path / "other.zip"
    with pytest.raises(RemoteRefused):
        await asyncio.to_thread(
            download_sftp,
            access,
            pair.private_pem,
            "someone_elses.dump",
            dest,
            host_key=HostKeyCheck(pinned=emulator.host_key_line()),
        )
    assert not dest.exists()
