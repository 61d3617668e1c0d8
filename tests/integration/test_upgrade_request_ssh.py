"""Confinement of the emulator's transfer endpoints, probed with OpenSSH `ssh` and `rsync`:
only `rsync --server` in the request's /data/, only the request's key, only user odoo."""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from odoo_upgrade.platform import CreatedRequest, TransferWindow, UpgradeRequestClient
from odoo_upgrade.transfer import SshKeyPair, generate_ssh_keypair
from tests.support.emulator import RunningEmulator, write_sample_dump
from tests.support.upgrade_request import create_request, request_client, upload, wait_for_status


@dataclass
class Window:
    """An open transfer window and the files plain OpenSSH needs to use it."""

    emu: RunningEmulator
    created: CreatedRequest
    window: TransferWindow
    key: Path
    known_hosts: Path

    def ssh_words(self, user: str = "odoo", key: Path | None = None) -> list[str]:
        return [
            "ssh",
            "-F",
            "none",
            "-p",
            str(self.window.ssh_port),
            "-i",
            str(key or self.key),
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "IdentityAgent=none",
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            f"UserKnownHostsFile={self.known_hosts}",
            "-o",
            "LogLevel=ERROR",
            "-l",
            user,
        ]

    def ssh(
        self, *command: str, user: str = "odoo", key: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.ssh_words(user, key), "127.0.0.1", *command],
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )

    def rsync(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["rsync", "-e", " ".join(self.ssh_words()), *args],
            capture_output=True,
            text=True,
            timeout=60,
        )

    @property
    def data(self) -> Path:
        return self.emu.request_data(self.created.request_id)


def key_file(path: Path, keys: SshKeyPair) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as stream:
        stream.write(keys.private_pem)
    return path


async def open_window(
    client: UpgradeRequestClient,
    emu: RunningEmulator,
    tmp_path: Path,
    kind: str,
    created: CreatedRequest,
    keys: SshKeyPair,
) -> Window:
    window = await client.transfer_start(created.token, kind)  # type: ignore[arg-type]
    known = tmp_path / f"known_hosts-{kind}"
    known.write_text(window.known_hosts)
    key = tmp_path / f"id-{kind}"
    if not key.exists():
        key_file(key, keys)
    return Window(emu, created, window, key, known)


@pytest.fixture
async def upload_window(shared_emulator: RunningEmulator, tmp_path: Path) -> AsyncIterator[Window]:
    keys = generate_ssh_keypair()
    async with request_client(shared_emulator) as client:
        created = await create_request(client, shared_emulator, keys)
        window = await open_window(client, shared_emulator, tmp_path, "upload", created, keys)
        yield window
        await client.transfer_stop(created.token)


@pytest.fixture
async def download_window(
    shared_emulator: RunningEmulator, tmp_path: Path
) -> AsyncIterator[Window]:
    keys = generate_ssh_keypair()
    async with request_client(shared_emulator) as client:
        created = await create_request(client, shared_emulator, keys)
        await upload(client, created, keys, write_sample_dump(tmp_path / "db.dump"))
        await client.process(created.token)
        await wait_for_status(client, created.token, "done")
        window = await open_window(client, shared_emulator, tmp_path, "download", created, keys)
        yield window
        await client.transfer_stop(created.token)


def test_a_command_other_than_rsync_server_is_refused(download_window: Window) -> None:
    for command in (["cat", "/etc/passwd"], ["sh", "-c", "id"], ["rsync", "--version"]):
        result = download_window.ssh(*command)
        assert result.returncode == 1, result
        assert "odoo-upgrade-emulator: refused" in result.stderr
        assert result.stdout == ""
    chained = download_window.ssh("rsync --server --sender . /data/ ; cat /etc/passwd")
    assert "shell operators are not allowed" in chained.stderr and "root:" not in chained.stdout


def test_no_shell_and_no_port_forwarding(download_window: Window) -> None:
    shell = subprocess.run(
        [*download_window.ssh_words(), "-T", "127.0.0.1"],
        input="id\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shell.returncode != 0 and "uid=" not in shell.stdout
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    forward = subprocess.run(
        [
            *download_window.ssh_words(),
            "-o",
            "ExitOnForwardFailure=yes",
            "-W",
            f"127.0.0.1:{port}",
            "127.0.0.1",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    listener.settimeout(0.5)
    with pytest.raises(TimeoutError):
        listener.accept()  # nothing was connected through the endpoint
    listener.close()
    assert forward.returncode != 0


def test_paths_outside_data_are_refused(download_window: Window, tmp_path: Path) -> None:
    target = tmp_path / "stolen"
    for source in ("/etc/passwd", "/data/../../etc/passwd", "/data/*", "upgraded.dump"):
        result = download_window.rsync("-r", f"odoo@127.0.0.1:{source}", str(target))
        assert result.returncode != 0, source
        assert "odoo-upgrade-emulator: refused" in result.stderr, result.stderr
    assert not target.exists()
    allowed = download_window.rsync("-r", "odoo@127.0.0.1:/data/upgrade-report.html", str(target))
    assert allowed.returncode == 0, allowed.stderr
    assert target.read_bytes() == (download_window.data / "upgrade-report.html").read_bytes()


def test_each_window_runs_only_its_direction(
    upload_window: Window, download_window: Window, tmp_path: Path
) -> None:
    local = tmp_path / "x.sql"
    local.write_text("-- sql\n")
    pushed = download_window.rsync(str(local), "odoo@127.0.0.1:/data/origin.sql")
    assert pushed.returncode != 0 and "accepts only rsync --server --sender" in pushed.stderr
    assert not (download_window.data / "origin.sql").exists()
    pulled = upload_window.rsync("odoo@127.0.0.1:/data/", str(tmp_path / "pulled"))
    assert pulled.returncode != 0 and "accepts only rsync --server (no --sender)" in pulled.stderr


def test_only_user_odoo_with_the_requests_own_key(upload_window: Window, tmp_path: Path) -> None:
    other = key_file(tmp_path / "id-other", generate_ssh_keypair())
    for user, key in (("root", None), ("odoo", other)):
        result = upload_window.ssh("rsync", "--server", ".", "/data/", user=user, key=key)
        assert result.returncode == 255
        assert "Permission denied (publickey)" in result.stderr


def test_uploaded_symlinks_are_munged(upload_window: Window, tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "toc.dat").write_bytes(b"PGDMP")
    (tree / "passwd").symlink_to("/etc/passwd")
    result = upload_window.rsync("-rl", f"{tree}/", "odoo@127.0.0.1:/data/origin.dump")
    assert result.returncode == 0, result.stderr
    stored = upload_window.data / "origin.dump" / "passwd"
    assert stored.is_symlink()
    assert os.readlink(stored).startswith("/rsyncd-munged/")
    assert not stored.exists()  # it leads nowhere


def test_transfer_stop_closes_the_port(upload_window: Window) -> None:
    port = upload_window.window.ssh_port
    with socket.create_connection(("127.0.0.1", port), timeout=5):
        pass
    answer = upload_window.emu.request_api("transfer/stop", token=upload_window.created.token)
    assert answer["result"] == {"stopped": True}
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
