"""rsync over OpenSSH against the emulator's transfer endpoints: upload, download of the set
with SHA256SUMS, resume after a cut, host keys, keys, and what is left on disk."""

from __future__ import annotations

import dataclasses
import hashlib
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from odoo_upgrade.platform import CreatedRequest, UpgradeRequestClient
from odoo_upgrade.transfer import (
    DestinationExists,
    DownloadBinding,
    RemoteRefused,
    RsyncEndpoint,
    SshHostKeyMismatch,
    SshKeyPair,
    TransferUnavailable,
    download_rsync,
    generate_ssh_keypair,
    upload_rsync,
)
from odoo_upgrade.transfer.rsync import sha256sums_text
from tests.support.emulator import (
    RunningEmulator,
    sample_dump_bytes,
    write_directory_dump,
    write_sample_dump,
)
from tests.support.upgrade_request import create_request, request_client, upload, wait_for_status

# A restart sends the whole file again; a resume, at least this much less of a 4 MB file cut
# after 2 MB. What was in flight when the link was cut (socket, SSH channel and rsync buffers:
# up to ~0.7 MB seen on loopback) is lost; cut after 1 MB, a resume saved only 0.29 MB once.
CUT_AFTER = 2_000_000
RESUME_SAVES_AT_LEAST = 500_000


@pytest.fixture
def keys() -> SshKeyPair:
    return generate_ssh_keypair()


def sessions(emu: RunningEmulator, kind: str) -> list[dict[str, object]]:
    return [c for c in emu.calls() if c["method"] == f"rsync-{kind}"]


def cut_and_resumed(emu: RunningEmulator, kind: str) -> tuple[dict[str, object], ...]:
    """The cut session and the one that resumed it, told apart by outcome: the cut one is
    recorded when its rsync exits, which may be after the resumed one ended."""
    deadline = time.monotonic() + 30
    while len(found := sessions(emu, kind)) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    return tuple(sorted(found, key=lambda s: bool(s["ok"])))


def tree(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


async def done_request(
    client: UpgradeRequestClient, emu: RunningEmulator, keys: SshKeyPair, dump: Path
) -> CreatedRequest:
    created = await create_request(client, emu, keys)
    await upload(client, created, keys, dump)
    await client.process(created.token)
    await wait_for_status(client, created.token, "done")
    return created


async def test_directory_dump_up_and_upgraded_set_down_with_checksums(
    emulator: RunningEmulator, tmp_path: Path, keys: SshKeyPair
) -> None:
    dump = write_directory_dump(tmp_path / "acme.dump", size=300_000)
    ups: list[tuple[int, int | None]] = []
    downs: list[tuple[int, int | None]] = []
    async with request_client(emulator) as client:
        created = await create_request(client, emulator, keys)
        sent = await upload(client, created, keys, dump, progress=lambda d, t: ups.append((d, t)))
        uploaded = emulator.request_data(created.request_id) / "origin.dump"
        assert tree(uploaded) == tree(dump)
        await client.process(created.token)
        await wait_for_status(client, created.token, "done")
        whole_log, _ = await client.logs(created.token)
        async with client.transfer_window(created.token, "download") as window:
            assert window.dump_name == "upgraded.dump"
            endpoint = RsyncEndpoint.for_window(client.request_host, window)
            got = await download_rsync(
                endpoint,
                keys.private_pem,
                tmp_path / "acme-18",
                dump_name=window.dump_name,
                progress=lambda d, t: downs.append((d, t)),
            )
    total = sum(len(b) for b in tree(dump).values())
    assert (sent.remote_name, sent.files, sent.bytes, sent.attempts) == ("origin.dump", 3, total, 1)
    assert sent.sha256 == hashlib.sha256(sha256sums_text(dump).encode()).hexdigest()
    assert ups[-1] == (total, total)
    assert [d for d, _ in ups] == sorted(d for d, _ in ups)

    root = tmp_path / "acme-18"
    files = tree(root)
    assert got.path == root and got.dump_path == root / "upgraded.dump"
    assert got.report_path == root / "upgrade-report.html" and got.log_path == root / "upgrade.log"
    assert got.dump_path.is_dir() and any(got.dump_path.iterdir())
    assert [p for p in files if p.startswith("filestore/")], "at least one new attachment"
    assert files["upgrade.log"].decode() == whole_log
    assert got.files == len(files) - 1 and got.bytes == sum(
        len(b) for name, b in files.items() if name != "SHA256SUMS"
    )
    listed = sorted(line.split("  ", 1)[1] for line in files["SHA256SUMS"].decode().splitlines())
    assert listed == sorted(name for name in files if name != "SHA256SUMS")
    assert got.sha256sums == hashlib.sha256(files["SHA256SUMS"]).hexdigest()
    check = subprocess.run(
        ["sha256sum", "--strict", "-c", "SHA256SUMS"], cwd=root, capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert not (tmp_path / ".acme-18.part").exists()
    assert downs[-1] == (got.bytes, got.bytes)
    assert got.to_json()["dump"] == "upgraded.dump"


@pytest.mark.parametrize(
    ("kind", "name", "remote"),
    [
        ("pgdmp", "db.backup", "origin.dump"),
        ("sql", "db.txt", "origin.sql"),
        ("gzip", "db.sql.gz", "origin.sql.gz"),
        ("zip", "db.zip", "origin.zip"),
    ],
)
async def test_upload_names_the_dump_by_its_format(
    shared_emulator: RunningEmulator,
    tmp_path: Path,
    keys: SshKeyPair,
    kind: str,
    name: str,
    remote: str,
) -> None:
    dump = write_sample_dump(tmp_path / name, kind)
    async with request_client(shared_emulator) as client:
        created = await create_request(client, shared_emulator, keys)
        sent = await upload(client, created, keys, dump)
    stored = shared_emulator.request_data(created.request_id) / remote
    assert sent.remote_name == remote
    assert stored.read_bytes() == dump.read_bytes()
    assert sent.sha256 == hashlib.sha256(dump.read_bytes()).hexdigest()


async def test_cut_upload_resumes_from_the_partial_file(
    make_emulator: Callable[..., RunningEmulator], tmp_path: Path, keys: SshKeyPair
) -> None:
    emu = make_emulator(drop_after_bytes=CUT_AFTER)
    dump = tmp_path / "big.sql"
    dump.write_bytes(sample_dump_bytes("sql", size=4_000_000))
    async with request_client(emu) as client:
        created = await create_request(client, emu, keys)
        sent = await upload(client, created, keys, dump)
    cut, resumed = cut_and_resumed(emu, "upload")
    assert cut["reasons"] == ["CONNECTION:CUT"] and resumed["ok"]
    assert sent.attempts == 2
    # The second run sent only what the first one did not get through (plus checksums). What
    # was in flight when the link was cut (socket and channel buffers) is lost, more of it on
    # a loaded machine, so "less than a restart" is measured with room for it.
    assert int(resumed["bytes_received"]) < dump.stat().st_size - RESUME_SAVES_AT_LEAST
    assert (emu.request_data(created.request_id) / "origin.sql").read_bytes() == dump.read_bytes()
    assert not list(emu.request_data(created.request_id).rglob(".odoo-upgrade-partial/*"))


async def test_cut_download_resumes_and_the_set_checks(
    make_emulator: Callable[..., RunningEmulator], tmp_path: Path, keys: SshKeyPair
) -> None:
    emu = make_emulator(process_seconds=0)
    dump = tmp_path / "big.sql"
    dump.write_bytes(sample_dump_bytes("sql", size=4_000_000))
    async with request_client(emu) as client:
        created = await done_request(client, emu, keys, dump)
        emu.restart(drop_after_bytes=CUT_AFTER)  # drops count from here
        async with client.transfer_window(created.token, "download") as window:
            endpoint = RsyncEndpoint.for_window(client.request_host, window)
            got = await download_rsync(
                endpoint, keys.private_pem, tmp_path / "out", dump_name="upgraded.dump"
            )
    cut, resumed = cut_and_resumed(emu, "download")
    assert cut["reasons"] == ["CONNECTION:CUT"] and resumed["ok"]
    assert got.attempts == 2
    assert int(resumed["bytes_sent"]) < got.bytes - RESUME_SAVES_AT_LEAST
    check = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=got.path, capture_output=True)
    assert check.returncode == 0
    served = emu.request_data(created.request_id) / "upgraded.dump"
    assert tree(got.dump_path) == tree(served)


async def test_unknown_host_key_is_refused_and_nothing_moves(
    emulator: RunningEmulator, tmp_path: Path, keys: SshKeyPair
) -> None:
    dump = write_sample_dump(tmp_path / "db.dump")
    impostor = generate_ssh_keypair().public_line.split()[:2]
    async with request_client(emulator) as client:
        created = await create_request(client, emulator, keys)
        async with client.transfer_window(created.token, "upload") as window:
            host = window.known_hosts.split()[0]
            forged = dataclasses.replace(window, known_hosts=f"{host} {' '.join(impostor)}\n")
            endpoint = RsyncEndpoint.for_window(client.request_host, forged)
            with pytest.raises(SshHostKeyMismatch) as refused:
                await upload_rsync(endpoint, keys.private_pem, dump)
    assert not refused.value.transient
    assert "nothing was transferred" in str(refused.value)
    assert endpoint.trusted_fingerprints()[0] in str(refused.value)
    assert sessions(emulator, "upload") == []
    assert list(emulator.request_data(created.request_id).iterdir()) == []


async def test_unknown_host_key_on_download_leaves_no_directory(
    shared_emulator: RunningEmulator, tmp_path: Path, keys: SshKeyPair
) -> None:
    dump = write_sample_dump(tmp_path / "db.dump")
    before = len(sessions(shared_emulator, "download"))
    async with request_client(shared_emulator) as client:
        created = await done_request(client, shared_emulator, keys, dump)
        async with client.transfer_window(created.token, "download") as window:
            other = generate_ssh_keypair().public_line.split()[:2]
            forged = dataclasses.replace(
                window, known_hosts=f"{window.known_hosts.split()[0]} {' '.join(other)}\n"
            )
            with pytest.raises(SshHostKeyMismatch):
                await download_rsync(
                    RsyncEndpoint.for_window(client.request_host, forged),
                    keys.private_pem,
                    tmp_path / "out",
                    dump_name="upgraded.dump",
                )
    assert len(sessions(shared_emulator, "download")) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["db.dump"]


async def test_another_requests_key_is_refused(
    shared_emulator: RunningEmulator, tmp_path: Path, keys: SshKeyPair
) -> None:
    dump = write_sample_dump(tmp_path / "db.dump")
    stranger = generate_ssh_keypair()
    async with request_client(shared_emulator) as client:
        await create_request(client, shared_emulator, stranger)  # a request of its own
        created = await create_request(client, shared_emulator, keys)
        async with client.transfer_window(created.token, "upload") as window:
            endpoint = RsyncEndpoint.for_window(client.request_host, window)
            with pytest.raises(RemoteRefused, match="refused the request's key"):
                await upload_rsync(endpoint, stranger.private_pem, dump)
    assert list(shared_emulator.request_data(created.request_id).iterdir()) == []
    refusals = [
        c
        for c in shared_emulator.calls("ssh-auth")
        if c["request"] == created.request_id and c["reasons"] == ["AUTH:REFUSED"]
    ]
    assert refusals


async def test_a_closed_window_fails_after_bounded_attempts(
    shared_emulator: RunningEmulator, tmp_path: Path, keys: SshKeyPair
) -> None:
    dump = write_sample_dump(tmp_path / "db.dump")
    async with request_client(shared_emulator) as client:
        created = await create_request(client, shared_emulator, keys)
        async with client.transfer_window(created.token, "upload") as window:
            endpoint = RsyncEndpoint.for_window(client.request_host, window)
        # transfer/stop closed the port: every run is refused, none makes progress.
        with pytest.raises(TransferUnavailable, match="2 times in a row without progress"):
            await upload_rsync(endpoint, keys.private_pem, dump, max_attempts=2)


async def test_download_never_touches_an_existing_destination(
    shared_emulator: RunningEmulator, tmp_path: Path, keys: SshKeyPair
) -> None:
    existing = tmp_path / "out"
    existing.mkdir()
    endpoint = RsyncEndpoint(host="127.0.0.1", port=1, known_hosts="[127.0.0.1]:1 ssh-ed25519 A\n")
    with pytest.raises(DestinationExists):
        await download_rsync(endpoint, keys.private_pem, existing, dump_name="upgraded.dump")
    assert list(existing.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


async def test_transfer_windows_follow_the_state(
    shared_emulator: RunningEmulator, tmp_path: Path, keys: SshKeyPair
) -> None:
    from odoo_upgrade.platform import PlatformFailure

    dump = write_sample_dump(tmp_path / "db.dump")
    async with request_client(shared_emulator) as client:
        created = await create_request(client, shared_emulator, keys)
        with pytest.raises(PlatformFailure, match='needs "done"'):
            await client.transfer_start(created.token, "download")
        done = await done_request(client, shared_emulator, keys, dump)
        with pytest.raises(PlatformFailure, match='needs "new"'):
            await client.transfer_start(done.token, "upload")


async def test_transfer_window_is_stopped_when_the_transfer_fails(
    shared_emulator: RunningEmulator, tmp_path: Path, keys: SshKeyPair
) -> None:
    async with request_client(shared_emulator) as client:
        created = await create_request(client, shared_emulator, keys)
        with pytest.raises(FileNotFoundError):
            async with client.transfer_window(created.token, "upload") as window:
                endpoint = RsyncEndpoint.for_window(client.request_host, window)
                await upload_rsync(endpoint, keys.private_pem, tmp_path / "missing.dump")
    mine = [c["method"] for c in shared_emulator.calls() if c["request"] == created.request_id]
    assert mine[-2:] == ["upgrade/request/transfer/start", "upgrade/request/transfer/stop"]
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", window.ssh_port), timeout=5).close()


async def test_transfer_ports_come_from_the_configured_range(
    make_emulator: Callable[..., RunningEmulator], tmp_path: Path, keys: SshKeyPair
) -> None:
    emu = make_emulator(rsync_port_range="41710-41719")
    async with request_client(emu) as client:
        created = await create_request(client, emu, keys)
        sent = await upload(client, created, keys, write_sample_dump(tmp_path / "db.dump"))
        window = await client.transfer_start(created.token, "upload")
        await client.transfer_stop(created.token)
    assert 41710 <= window.ssh_port <= 41719
    assert sent.attempts == 1


@pytest.mark.parametrize("recorded", [None, "999"], ids=["no-origin", "another-request"])
async def test_a_part_set_of_another_request_is_cleared_before_the_download(
    emulator: RunningEmulator, tmp_path: Path, keys: SshKeyPair, recorded: str | None
) -> None:
    """A download Job killed part-way, the resource deleted, a new one for the same path: the
    left part set is another request's, and none of it may be published in the new set."""
    dump = write_directory_dump(tmp_path / "acme.dump", size=100_000)
    root = tmp_path / "acme-18"
    part = tmp_path / ".acme-18.part"
    (part / "filestore" / "zz").mkdir(parents=True)
    (part / "filestore" / "zz" / "zzz").write_bytes(b"another request's attachment")
    (part / "upgrade-report.html").write_bytes(b"another request's report")
    if recorded is not None:
        (tmp_path / ".acme-18.part.json").write_text(f'{{"request_id": "{recorded}"}}')
    async with request_client(emulator) as client:
        created = await done_request(client, emulator, keys, dump)
        async with client.transfer_window(created.token, "download") as window:
            endpoint = RsyncEndpoint.for_window(client.request_host, window)
            got = await download_rsync(
                endpoint,
                keys.private_pem,
                root,
                dump_name=window.dump_name,
                binding=DownloadBinding(str(created.request_id)),
            )
    files = tree(root)
    assert "filestore/zz/zzz" not in files
    served = tree(emulator.request_data(created.request_id))
    assert files["upgrade-report.html"] == served["upgrade-report.html"]
    assert "zz/zzz" not in files["SHA256SUMS"].decode()
    assert got.files == len(files) - 1
    assert not part.exists() and not (tmp_path / ".acme-18.part.json").exists()
