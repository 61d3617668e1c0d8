"""The SFTP side (paramiko): one shared file per request, key-only auth, append/resume.

User `user_<id>` logs in with a key sent through `request_sftp_access`. Only the request's
`shared_file` is visible; it is writable while the request is a draft (OpenSSH `put -a` resumes
by writing at the remote size), and `upgraded_<filename>` becomes readable once done. No other
file can be created, renamed or removed. Runs in threads beside the aiohttp loop.

Each open file that moved bytes is recorded in calls.jsonl when closed, as `sftp-get` or
`sftp-put` with the file name, the bytes moved and the first offset (a resume starts past 0).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import socket
import stat
import threading
import time
from typing import Any

import paramiko
from paramiko import SFTPAttributes, SFTPHandle, SFTPServer, SFTPServerInterface
from paramiko.common import (
    AUTH_FAILED,
    AUTH_SUCCESSFUL,
    OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED,
    OPEN_SUCCEEDED,
)
from paramiko.sftp import SFTP_FAILURE, SFTP_NO_SUCH_FILE, SFTP_OK, SFTP_PERMISSION_DENIED

from odoo_upgrade.emulator.calls import CallLog
from odoo_upgrade.emulator.faults import FaultInjector
from odoo_upgrade.emulator.store import RequestRecord, RequestStore

log = logging.getLogger(__name__)

_USER = re.compile(r"^user_(\d+)$")
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC


class SftpConnection(paramiko.ServerInterface):
    """One SSH connection: authenticates `user_<id>` against that request's submitted keys."""

    def __init__(
        self,
        store: RequestStore,
        faults: FaultInjector,
        sock: socket.socket,
        calls: CallLog | None = None,
    ) -> None:
        self.store = store
        self.faults = faults
        self.sock = sock
        self.calls = calls
        self.request_id: int | None = None
        # Once cut, requests already buffered from the client must not be served any more.
        self.was_cut = False

    def get_allowed_auths(self, username: str) -> str:
        return "publickey"

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        match = _USER.match(username)
        record = self.store.get(int(match.group(1))) if match else None
        offered = f"{key.get_name()} {key.get_base64()}"
        if record is not None and offered in record.ssh_keys:
            self.request_id = record.id
            return AUTH_SUCCESSFUL
        return AUTH_FAILED

    def check_channel_request(self, kind: str, chanid: int) -> int:
        if kind == "session":
            return OPEN_SUCCEEDED
        return OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED

    def cut(self) -> None:
        """Drop the TCP connection mid-transfer (`--drop-after-bytes`)."""
        self.was_cut = True
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)


class SharedFileHandle(SFTPHandle):
    """An open shared or upgraded file, read and written at offsets (pread/pwrite)."""

    def __init__(
        self, connection: SftpConnection, fd: int, name: str, transfer: str, flags: int
    ) -> None:
        super().__init__(flags)
        self.connection = connection
        self.fd = fd
        self.name = name
        self.transfer = transfer
        self.moved = 0
        self.first_offset: int | None = None  # where the client started reading or writing
        self.writing = bool(flags & _WRITE_FLAGS)

    def _over_drop_point(self, size: int) -> int | None:
        """Bytes still allowed before this connection must be cut, or None (never cut)."""
        request_id = self.connection.request_id
        assert request_id is not None
        drop_at = self.connection.faults.drop_point(request_id, self.transfer)
        if drop_at is None or self.moved + size < drop_at:
            return None
        return max(0, drop_at - self.moved)

    def _cut(self) -> int:
        assert self.connection.request_id is not None
        self.connection.faults.mark_dropped(self.connection.request_id, self.transfer)
        log.info("sftp %s of request %s cut (fault)", self.transfer, self.connection.request_id)
        self.connection.cut()
        return SFTP_FAILURE

    def write(self, offset: int, data: bytes) -> int:  # type: ignore[override]
        if self.connection.was_cut:
            return SFTP_FAILURE
        allowed = self._over_drop_point(len(data))
        chunk = data if allowed is None else data[:allowed]
        self._note_offset(offset)
        os.pwrite(self.fd, chunk, offset)
        self.moved += len(chunk)
        self.connection.faults.pace_blocking(len(chunk))
        return self._cut() if allowed is not None else SFTP_OK

    def read(self, offset: int, length: int) -> bytes | int:
        if self.connection.was_cut:
            return SFTP_FAILURE
        data = os.pread(self.fd, length, offset)
        self._note_offset(offset)
        allowed = self._over_drop_point(len(data))
        if allowed is not None:
            return self._cut()
        self.moved += len(data)
        return data

    def stat(self) -> SFTPAttributes | int:
        attributes = SFTPAttributes.from_stat(os.fstat(self.fd), self.name)
        attributes.st_mode = stat.S_IFREG | 0o666
        return attributes

    def chattr(self, attr: SFTPAttributes) -> int:
        return SFTP_OK  # times and modes are not kept; accepting keeps clients happy

    def _note_offset(self, offset: int) -> None:
        if self.first_offset is None or offset < self.first_offset:
            self.first_offset = offset

    def close(self) -> None:
        os.close(self.fd)
        super().close()
        calls, request_id = self.connection.calls, self.connection.request_id
        if calls is not None and self.first_offset is not None:
            method = "sftp-put" if self.writing else "sftp-get"
            extra = {"file": self.name, "bytes": self.moved, "from": self.first_offset}
            calls.record(method, request_id, 200, {"failures": []}, extra=extra)


class SharedFileSftp(SFTPServerInterface):
    """The file system a request's SFTP user sees: its shared file, and later the upgrade."""

    def __init__(self, server: SftpConnection, *args: Any, **kwargs: Any) -> None:
        super().__init__(server, *args, **kwargs)
        self.connection = server
        self.store = server.store

    def _record(self) -> RequestRecord:
        assert self.connection.request_id is not None
        record = self.store.get(self.connection.request_id)
        assert record is not None
        return record

    @staticmethod
    def _name(path: str) -> str:
        return path.replace("\\", "/").strip("/").removeprefix("./")

    def _visible(self, record: RequestRecord) -> dict[str, tuple[str, str]]:
        """Visible names -> (local path, transfer name)."""
        files = {record.filename: (str(self.store.original_path(record.id)), "sftp-shared")}
        if self.store.upgraded_ready(record):
            files[f"upgraded_{record.filename}"] = (
                str(self.store.upgraded_path(record.id)),
                "sftp-upgraded",
            )
        return files

    def _attributes(self, name: str, local: str) -> SFTPAttributes:
        try:
            attributes = SFTPAttributes.from_stat(os.stat(local), name)
        except FileNotFoundError:
            # The shared file exists from the start, empty, as on the platform.
            attributes = SFTPAttributes()
            attributes.filename = name
            attributes.st_size = 0
            attributes.st_mtime = attributes.st_atime = int(time.time())
        attributes.st_uid = attributes.st_gid = 0
        attributes.st_mode = stat.S_IFREG | 0o666
        return attributes

    def canonicalize(self, path: str) -> str:
        name = self._name(path)
        return "/" if name in ("", ".") else f"/{name}"

    def list_folder(self, path: str) -> list[SFTPAttributes] | int:
        if self._name(path) not in ("", "."):
            return SFTP_NO_SUCH_FILE
        return [self._attributes(n, p) for n, (p, _) in self._visible(self._record()).items()]

    def stat(self, path: str) -> SFTPAttributes | int:
        name = self._name(path)
        if name in ("", "."):
            attributes = SFTPAttributes()
            attributes.st_mode = stat.S_IFDIR | 0o755
            attributes.st_size = 0
            return attributes
        found = self._visible(self._record()).get(name)
        return self._attributes(name, found[0]) if found else SFTP_NO_SUCH_FILE

    lstat = stat

    def open(self, path: str, flags: int, attr: SFTPAttributes) -> SFTPHandle | int:
        record = self._record()
        name = self._name(path)
        found = self._visible(record).get(name)
        writing = bool(flags & _WRITE_FLAGS)
        if found is None:
            return SFTP_PERMISSION_DENIED if writing else SFTP_NO_SUCH_FILE
        local, transfer = found
        if writing:
            if name != record.filename or self.store.view(record).state != "draft":
                return SFTP_PERMISSION_DENIED
            os_flags = os.O_WRONLY | os.O_CREAT | (flags & (os.O_TRUNC | os.O_APPEND))
            if flags & os.O_RDWR:
                os_flags = (os_flags & ~os.O_WRONLY) | os.O_RDWR
        else:
            os_flags = os.O_RDONLY
        try:
            fd = os.open(local, os_flags, 0o644)
        except FileNotFoundError:
            return SFTP_NO_SUCH_FILE
        except OSError as error:
            return SFTPServer.convert_errno(error.errno or errno.EIO)
        return SharedFileHandle(self.connection, fd, name, transfer, flags)

    def chattr(self, path: str, attr: SFTPAttributes) -> int:
        found = self._visible(self._record()).get(self._name(path))
        return SFTP_OK if found else SFTP_PERMISSION_DENIED

    def remove(self, path: str) -> int:
        return SFTP_PERMISSION_DENIED

    def rename(self, oldpath: str, newpath: str) -> int:
        return SFTP_PERMISSION_DENIED

    def posix_rename(self, oldpath: str, newpath: str) -> int:
        return SFTP_PERMISSION_DENIED

    def mkdir(self, path: str, attr: SFTPAttributes) -> int:
        return SFTP_PERMISSION_DENIED

    def rmdir(self, path: str) -> int:
        return SFTP_PERMISSION_DENIED

    def symlink(self, target_path: str, path: str) -> int:
        return SFTP_PERMISSION_DENIED


class SftpServer:
    """Accepts SSH connections on a listening socket, each served by a paramiko Transport."""

    def __init__(
        self,
        host: str,
        port: int,
        host_key: paramiko.PKey,
        store: RequestStore,
        faults: FaultInjector,
        calls: CallLog | None = None,
    ) -> None:
        self.host_key = host_key
        self.store = store
        self.faults = faults
        self.calls = calls
        self.listener = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((host, port))
        self.listener.listen(64)
        self.port: int = self.listener.getsockname()[1]
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._accept_loop, name="sftp-accept", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        with contextlib.suppress(OSError):
            self.listener.close()

    def _accept_loop(self) -> None:
        while not self._stopped.is_set():
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _serve(self, sock: socket.socket) -> None:
        transport = paramiko.Transport(sock)
        transport.add_server_key(self.host_key)
        transport.set_subsystem_handler("sftp", SFTPServer, SharedFileSftp)
        connection = SftpConnection(self.store, self.faults, sock, self.calls)
        try:
            transport.start_server(server=connection)
        except (paramiko.SSHException, EOFError, OSError) as error:
            log.info("sftp handshake failed: %s", type(error).__name__)
            transport.close()
