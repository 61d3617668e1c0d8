"""Every SSH/SFTP step has a timeout: a server that accepts TCP and then stalls — before its
banner, in the key exchange, at authentication, on the channel, the subsystem, the SFTP
handshake, a stat, a read or a write — makes the transfer fail with a transient error."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paramiko
import pytest
from paramiko import SFTPAttributes, SFTPHandle, SFTPServer, SFTPServerInterface
from paramiko.common import AUTH_SUCCESSFUL, OPEN_SUCCEEDED
from paramiko.sftp import SFTP_OK

from odoo_upgrade.platform import SftpAccess
from odoo_upgrade.transfer import (
    HostKeyCheck,
    SshTimeouts,
    TransferUnavailable,
    download_sftp,
    generate_ssh_keypair,
    upload_sftp,
)
from odoo_upgrade.transfer.part_file import part_path
from odoo_upgrade.transfer.ssh_keys import key_line, load_private_key

# Short bounds so that each stall ends in a fraction of a second; the guard below only keeps a
# regression from hanging the suite.
SHORT = SshTimeouts(connect=0.5, operation=0.5)
STAGES_BEFORE_SFTP = ("tcp", "banner", "kex", "auth", "channel", "subsystem", "sftp-init")
pytestmark = pytest.mark.timeout(60)


class StallingServer:
    """Listens on 127.0.0.1 and stalls each connection at `stage` until closed.

    `tcp`: accepts and never says anything; `banner`: sends its SSH banner, then nothing;
    `kex`..`write`: a real paramiko SSH server that stops answering at that step.
    """

    def __init__(self, stage: str, content: bytes = b"x" * 300_000) -> None:
        self.stage = stage
        self.content = content
        self.host_key = load_private_key(generate_ssh_keypair().private_pem)
        self.release = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self._connections: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            self._connections.append(sock)
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _stall(self) -> None:
        self.release.wait(30)

    def _serve(self, sock: socket.socket) -> None:
        if self.stage == "tcp":
            return self._stall()
        if self.stage == "banner":
            sock.sendall(b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n")
            return self._stall()
        if self.stage == "kex":
            sock.sendall(b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n")
            sock.recv(4096)  # the client's banner and KEXINIT, never answered
            return self._stall()
        transport = paramiko.Transport(sock)
        transport.add_server_key(self.host_key)
        transport.set_subsystem_handler("sftp", _StallingSftp, _Files, self)
        with contextlib.suppress(Exception):
            transport.start_server(server=_Interface(self))

    def close(self) -> None:
        self.release.set()
        self.listener.close()
        for sock in self._connections:
            with contextlib.suppress(OSError):
                sock.close()


class _Interface(paramiko.ServerInterface):
    def __init__(self, server: StallingServer) -> None:
        self.server = server

    def get_allowed_auths(self, username: str) -> str:
        return "publickey"

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        if self.server.stage == "auth":
            self.server._stall()
        return AUTH_SUCCESSFUL

    def check_channel_request(self, kind: str, chanid: int) -> int:
        if self.server.stage == "channel":
            self.server._stall()
        return OPEN_SUCCEEDED

    def check_channel_subsystem_request(self, channel: paramiko.Channel, name: str) -> bool:
        if self.server.stage == "subsystem":
            self.server._stall()
        return bool(super().check_channel_subsystem_request(channel, name))


class _StallingSftp(SFTPServer):
    def start_subsystem(self, name: str, transport: paramiko.Transport, channel: Any) -> None:
        server: StallingServer = self.server.stalling  # type: ignore[attr-defined]
        if server.stage == "sftp-init":
            return server._stall()
        super().start_subsystem(name, transport, channel)


class _Handle(SFTPHandle):
    def __init__(self, server: StallingServer, flags: int) -> None:
        super().__init__(flags)
        self.server = server

    def read(self, offset: int, length: int) -> bytes | int:
        if self.server.stage == "read":
            self.server._stall()
        return self.server.content[offset : offset + length]

    def write(self, offset: int, data: bytes) -> int:  # type: ignore[override]
        if self.server.stage == "write":
            self.server._stall()
        return SFTP_OK

    def stat(self) -> SFTPAttributes:
        return self.server_attributes()

    def server_attributes(self) -> SFTPAttributes:
        attributes = SFTPAttributes()
        attributes.st_size = len(self.server.content) if self.server.stage == "read" else 0
        attributes.st_mode = 0o100644
        attributes.st_mtime = 1_700_000_000
        return attributes


class _Files(SFTPServerInterface):
    def __init__(self, server: paramiko.ServerInterface, stalling: StallingServer) -> None:
        super().__init__(server)
        self.stalling = stalling

    def stat(self, path: str) -> SFTPAttributes | int:
        if self.stalling.stage == "stat":
            self.stalling._stall()
        return _Handle(self.stalling, 0).server_attributes()

    lstat = stat

    def open(self, path: str, flags: int, attr: SFTPAttributes) -> SFTPHandle | int:
        return _Handle(self.stalling, flags)


@pytest.fixture
def stalling() -> Iterator[Callable[[str], StallingServer]]:
    started: list[StallingServer] = []

    def start(stage: str) -> StallingServer:
        server = StallingServer(stage)
        started.append(server)
        return server

    yield start
    for server in started:
        server.close()


def access_to(server: StallingServer) -> SftpAccess:
    return SftpAccess(
        hostname="127.0.0.1", port=server.port, user="user_7", shared_file="db.dump", request_id=7
    )


@pytest.mark.parametrize("stage", [*STAGES_BEFORE_SFTP, "stat", "write"])
def test_an_upload_to_a_stalling_server_fails_transient(
    stage: str, stalling: Callable[[str], StallingServer], tmp_path: Path
) -> None:
    server = stalling(stage)
    dump = tmp_path / "db.dump"
    dump.write_bytes(os.urandom(200_000))
    with pytest.raises(TransferUnavailable) as caught:
        upload_sftp(
            access_to(server),
            generate_ssh_keypair().private_pem,
            dump,
            host_key=HostKeyCheck(pinned=key_line(server.host_key)),
            max_attempts=1,
            timeouts=SHORT,
        )
    assert caught.value.transient
    assert "PRIVATE" not in str(caught.value)


@pytest.mark.parametrize("stage", [*STAGES_BEFORE_SFTP, "stat", "read"])
def test_a_download_from_a_stalling_server_fails_transient(
    stage: str, stalling: Callable[[str], StallingServer], tmp_path: Path
) -> None:
    server = stalling(stage)
    dest = tmp_path / "upgraded.zip"
    with pytest.raises(TransferUnavailable) as caught:
        download_sftp(
            access_to(server),
            generate_ssh_keypair().private_pem,
            "upgraded_db.dump",
            dest,
            host_key=HostKeyCheck(pinned=key_line(server.host_key)),
            max_attempts=1,
            timeouts=SHORT,
        )
    assert caught.value.transient
    assert not dest.exists()
    assert not part_path(dest).exists() or part_path(dest).stat().st_size < len(server.content)


def test_a_stall_is_named_in_the_error(
    stalling: Callable[[str], StallingServer], tmp_path: Path
) -> None:
    server = stalling("banner")
    dump = tmp_path / "db.dump"
    dump.write_bytes(b"x" * 1000)
    with pytest.raises(TransferUnavailable, match=r"timed out|within 0\.5 s") as caught:
        upload_sftp(
            access_to(server),
            generate_ssh_keypair().private_pem,
            dump,
            host_key=HostKeyCheck(pinned=key_line(server.host_key)),
            max_attempts=1,
            timeouts=SHORT,
        )
    assert f"127.0.0.1:{server.port}" in str(caught.value)
