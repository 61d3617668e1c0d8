"""The emulator's SFTP server, driven by paramiko and by OpenSSH's `sftp` over loopback."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paramiko
import pytest

from tests.support.emulator import RunningEmulator, sample_dump_bytes


@pytest.fixture
def client_key(tmp_path: Path) -> Path:
    """An ed25519 key pair made by ssh-keygen; returns the private key path (`.pub` beside)."""
    path = tmp_path / "id_ed25519"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "test@example", "-f", str(path)],
        check=True,
    )
    return path


def grant_sftp(emu: RunningEmulator, request: dict[str, Any], key: Path) -> dict[str, Any]:
    keys = f"# our key\n\n{(key.with_suffix('.pub')).read_text()}"
    answer = emu.api(
        "request_sftp_access",
        http_method="POST",
        request=request["id"],
        key=request["key"],
        ssh_keys=keys,
    )
    assert answer["failures"] == [], answer
    access: dict[str, Any] = answer["request"]
    return access


def sftp_client(emu: RunningEmulator, user: str, key: Path) -> paramiko.SFTPClient:
    transport = paramiko.Transport(("127.0.0.1", emu.sftp_port))
    transport.connect(username=user, pkey=paramiko.Ed25519Key.from_private_key_file(str(key)))
    host_key = transport.get_remote_server_key()
    assert f"{host_key.get_name()} {host_key.get_base64()}" == emu.host_key_line()
    client = paramiko.SFTPClient.from_transport(transport)
    assert client is not None
    return client


@pytest.fixture
def session(
    emulator: RunningEmulator, client_key: Path
) -> Iterator[tuple[dict[str, Any], paramiko.SFTPClient]]:
    request = emulator.create_request(filename="acme.dump")
    access = grant_sftp(emulator, request, client_key)
    client = sftp_client(emulator, access["sftp_user"], client_key)
    yield request, client
    client.close()


def test_only_the_shared_file_is_visible(session: tuple[dict[str, Any], Any]) -> None:
    _, client = session
    assert client.listdir("/") == ["acme.dump"]
    assert client.stat("acme.dump").st_size == 0
    assert client.stat("/acme.dump").st_size == 0


def test_no_other_file_can_be_created_renamed_or_removed(
    session: tuple[dict[str, Any], Any],
) -> None:
    _, client = session
    with pytest.raises(PermissionError):
        client.open("/other.dump", "wb")
    with pytest.raises(PermissionError):
        client.mkdir("/dir")
    with pytest.raises(PermissionError):
        client.rename("/acme.dump", "/moved.dump")
    with pytest.raises(PermissionError):
        client.remove("/acme.dump")
    assert client.listdir("/") == ["acme.dump"]


def test_put_then_append_resumes_the_shared_file(
    emulator: RunningEmulator, session: tuple[dict[str, Any], Any]
) -> None:
    request, client = session
    dump = sample_dump_bytes("pgdmp", size=100_000)
    with client.open("acme.dump", "wb") as remote:
        remote.write(dump[:30_000])
    with client.open("acme.dump", "ab") as remote:
        remote.write(dump[30_000:])
    assert client.stat("acme.dump").st_size == len(dump)
    assert emulator.original_path(request["id"]).read_bytes() == dump


def test_writes_are_refused_after_process(
    emulator: RunningEmulator, session: tuple[dict[str, Any], Any]
) -> None:
    request, client = session
    with client.open("acme.dump", "wb") as remote:
        remote.write(sample_dump_bytes("sql", size=4096))
    emulator.api("process", request=request["id"], key=request["key"])
    with pytest.raises(PermissionError):
        client.open("acme.dump", "ab")


def test_a_key_not_submitted_is_refused(
    emulator: RunningEmulator, client_key: Path, tmp_path: Path
) -> None:
    request = emulator.create_request()
    grant_sftp(emulator, request, client_key)
    stranger = tmp_path / "stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)], check=True)
    with pytest.raises(paramiko.AuthenticationException):
        sftp_client(emulator, f"user_{request['id']}", stranger)
    other = emulator.create_request()
    with pytest.raises(paramiko.AuthenticationException):
        sftp_client(emulator, f"user_{other['id']}", client_key)


def test_upgraded_file_is_readable_once_done(make_emulator: Any, client_key: Path) -> None:
    emu: RunningEmulator = make_emulator(process_seconds=0)
    request = emu.create_request(filename="acme.dump")
    access = grant_sftp(emu, request, client_key)
    client = sftp_client(emu, access["sftp_user"], client_key)
    with client.open("acme.dump", "wb") as remote:
        remote.write(sample_dump_bytes("sql", size=20_000))
    emu.api("process", request=request["id"], key=request["key"])
    emu.wait_for_state(request["id"], request["key"], "done")
    # SFTP access may be asked again in `done`, for the download.
    grant_sftp(emu, request, client_key)
    assert sorted(client.listdir("/")) == ["acme.dump", "upgraded_acme.dump"]
    with client.open("upgraded_acme.dump", "rb") as remote:
        remote.seek(100)
        assert remote.read() == emu.upgraded_bytes(request["id"])[100:]
    with pytest.raises(PermissionError):
        client.open("upgraded_acme.dump", "wb")
    client.close()
    # Each transfer is in the call log, as API calls are: what moved, from where.
    size = len(emu.upgraded_bytes(request["id"]))
    transfers = [
        {k: c[k] for k in ("method", "request", "file", "bytes", "from")}
        for c in emu.calls()
        if c["method"].startswith("sftp-")
    ]
    assert transfers == [
        {"method": "sftp-put", "request": request["id"], "file": "acme.dump", "bytes": 20_000,
         "from": 0},
        {"method": "sftp-get", "request": request["id"], "file": "upgraded_acme.dump",
         "bytes": size - 100, "from": 100},
    ]  # fmt: skip


def test_host_key_is_kept_across_restarts(emulator: RunningEmulator) -> None:
    before = emulator.host_key_line()
    emulator.restart()
    assert emulator.host_key_line() == before
    transport = paramiko.Transport(("127.0.0.1", emulator.sftp_port))
    transport.start_client()
    key = transport.get_remote_server_key()
    transport.close()
    assert f"{key.get_name()} {key.get_base64()}" == before


def openssh_sftp(emu: RunningEmulator, user: str, key: Path, commands: str) -> Any:
    return subprocess.run(
        ["sftp", "-b", "-", "-o", "StrictHostKeyChecking=no",
         "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
         "-i", str(key), "-P", str(emu.sftp_port), f"{user}@127.0.0.1"],
        input=commands.encode(),
        capture_output=True,
        timeout=60,
    )  # fmt: skip


def test_openssh_put_cut_then_put_a_resumes_then_get_upgraded(
    make_emulator: Any, client_key: Path, tmp_path: Path
) -> None:
    emu: RunningEmulator = make_emulator(process_seconds=0, drop_after_bytes=200_000)
    request = emu.create_request(filename="openchs.70.cdump")
    access = grant_sftp(emu, request, client_key)
    dump = tmp_path / "openchs.70.cdump"
    dump.write_bytes(sample_dump_bytes("pgdmp", size=600_000))
    user = access["sftp_user"]

    cut = openssh_sftp(emu, user, client_key, f"put {dump} openchs.70.cdump\n")
    assert cut.returncode != 0
    assert emu.original_path(request["id"]).stat().st_size == 200_000

    resumed = openssh_sftp(emu, user, client_key, f"put -a {dump} openchs.70.cdump\nls -l\n")
    assert resumed.returncode == 0, resumed.stderr
    assert emu.original_path(request["id"]).read_bytes() == dump.read_bytes()

    emu.api("process", request=request["id"], key=request["key"])
    emu.wait_for_state(request["id"], request["key"], "done")
    local = tmp_path / "upgraded_openchs.70.cdump"
    get = f"get upgraded_openchs.70.cdump {local}\n"
    first = openssh_sftp(emu, user, client_key, get)  # cut once, on the download too
    assert first.returncode != 0
    again = openssh_sftp(emu, user, client_key, get)
    assert again.returncode == 0, again.stderr
    assert local.read_bytes() == emu.upgraded_bytes(request["id"])
