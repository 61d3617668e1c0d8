"""Upload progress as the operator sees it for SFTP: the size of the shared file on the
platform's SFTP server (the emulator on loopback), only from the recorded host key."""

from __future__ import annotations

import json
from pathlib import Path

import paramiko

from odoo_upgrade.controller.sftp_progress import remote_size
from odoo_upgrade.transfer import generate_ssh_keypair
from odoo_upgrade.transfer.ssh_keys import load_private_key
from tests.support.emulator import RunningEmulator


def request_secret(emulator: RunningEmulator, host_key: str) -> dict[str, str]:
    request = emulator.create_request(filename="acme.dump")
    keys = generate_ssh_keypair()
    answer = emulator.api(
        "request_sftp_access",
        http_method="POST",
        request=request["id"],
        key=request["key"],
        ssh_keys=keys.public_line,
    )
    assert not answer["failures"], answer
    return {
        "requestId": str(request["id"]),
        "key": request["key"],
        "ssh-privatekey": keys.private_pem,
        "sftp-access": json.dumps(answer["request"]),
        "sftp-host-key": host_key,
    }


def put(secret: dict[str, str], data: bytes) -> None:
    access = json.loads(secret["sftp-access"])
    transport = paramiko.Transport((access["hostname"], int(access["sftp_port"])))
    try:
        transport.connect(
            username=access["sftp_user"], pkey=load_private_key(secret["ssh-privatekey"])
        )
        sftp = paramiko.SFTPClient.from_transport(transport)
        assert sftp is not None
        with sftp.open(access["shared_file"], "ab") as remote:
            remote.write(data)
    finally:
        transport.close()


def test_remote_size_follows_the_bytes_that_reached_the_platform(tmp_path: Path) -> None:
    with RunningEmulator(tmp_path / "emulator") as emulator:
        secret = request_secret(emulator, emulator.host_key_line())
        assert remote_size(secret) == 0
        put(secret, b"x" * 5000)
        assert remote_size(secret) == 5000


def test_remote_size_refuses_a_host_with_another_key(tmp_path: Path) -> None:
    other = generate_ssh_keypair().public_line.rsplit(" ", 1)[0]
    with RunningEmulator(tmp_path / "emulator") as emulator:
        secret = request_secret(emulator, other)
        assert remote_size(secret) is None
