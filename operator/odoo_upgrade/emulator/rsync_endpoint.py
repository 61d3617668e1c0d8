"""Per-transfer SSH endpoints (paramiko) that run the real `rsync --server` in `/data/`.

`transfer/start` opens one on its own port: user `odoo`, only the request's public key, only
an exec of a checked `rsync --server` command (`rsync_command.py`), run without a shell in the
request's `data/` directory with its stdin/stdout/stderr piped to the SSH channel. Shells,
ptys, subsystems and forwarding are refused. `transfer/stop` (or inactivity) closes it.
`--drop-after-bytes` cuts one connection per (request, transfer type) after that many bytes.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import os
import random
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import paramiko
from paramiko.common import (
    AUTH_FAILED,
    AUTH_SUCCESSFUL,
    OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED,
    OPEN_SUCCEEDED,
)

from odoo_upgrade.emulator.calls import CallLog
from odoo_upgrade.emulator.faults import FaultInjector
from odoo_upgrade.emulator.rsync_command import RsyncCommandRefused, parse_server_command

log = logging.getLogger(__name__)

SSH_USER = "odoo"
HANDSHAKE_TIMEOUT = 30.0
BLOCK = 256 * 1024
WINDOW_SIZE = 16 * 1024 * 1024
# After a cut, the rsync process gets this long to exit by itself (and keep its partial file).
EXIT_GRACE = 20.0
# After the exit status, the client gets this long to close the connection itself.
CLOSE_GRACE = 10.0


def key_line(key: paramiko.PKey) -> str:
    return f"{key.get_name()} {key.get_base64()}"


def bind_listener(host: str, port_range: tuple[int, int] | None) -> socket.socket:
    """A listening socket on a free port of `port_range` (inclusive), or any free port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    candidates = [0]
    if port_range is not None:
        candidates = list(range(port_range[0], port_range[1] + 1))
        random.shuffle(candidates)
    for port in candidates:
        listener = socket.socket(family)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind((host, port))
        except OSError:
            listener.close()
            continue
        listener.listen(16)
        return listener
    raise OSError(f"no free port in {port_range[0]}-{port_range[1]}")  # type: ignore[index]


class _Meter:
    """Bytes through one session, and the one cut `--drop-after-bytes` asks for."""

    def __init__(self, drop_at: int | None, cut: threading.Event) -> None:
        self.drop_at = drop_at
        self.cut = cut
        self.received = 0
        self.sent = 0
        self._lock = threading.Lock()

    def allow(self, size: int, *, incoming: bool) -> int:
        """How many of `size` bytes may pass before the cut (all of them when none is due)."""
        with self._lock:
            if self.cut.is_set():
                return 0
            moved = self.received + self.sent
            allowed = size
            if self.drop_at is not None and moved + size >= self.drop_at:
                allowed = max(0, self.drop_at - moved)
                self.cut.set()
            if incoming:
                self.received += allowed
            else:
                self.sent += allowed
            return allowed


class _Connection(paramiko.ServerInterface):
    """One SSH connection: user `odoo` with the request's key, then one exec request."""

    def __init__(self, endpoint: TransferEndpoint) -> None:
        self.endpoint = endpoint
        self.command: str | None = None
        self.exec_requested = threading.Event()

    def get_allowed_auths(self, username: str) -> str:
        return "publickey"

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        allowed = self.endpoint.authorized_key
        if username == SSH_USER and hmac.compare_digest(key_line(key), allowed):
            return AUTH_SUCCESSFUL
        self.endpoint.record("ssh-auth", 403, "AUTH:REFUSED")
        return AUTH_FAILED

    def check_channel_request(self, kind: str, chanid: int) -> int:
        return OPEN_SUCCEEDED if kind == "session" else OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED

    def check_channel_exec_request(self, channel: paramiko.Channel, command: bytes) -> bool:
        if self.command is not None:
            return False  # one command per connection
        self.command = bytes(command).decode("utf-8", "replace")
        self.exec_requested.set()
        return True

    def check_channel_shell_request(self, channel: paramiko.Channel) -> bool:
        return False

    def check_channel_pty_request(self, *args: object) -> bool:
        return False


@dataclass
class TransferEndpoint:
    """The SSH port of one transfer window of one request."""

    request_id: int
    transfer_type: str  # "upload" or "download"
    directory: Path  # the request's /data/
    authorized_key: str  # "<type> <base64>"
    host_key: paramiko.PKey
    listener: socket.socket
    faults: FaultInjector
    calls: CallLog
    rsync_binary: str
    idle_seconds: float = 300.0
    _transports: set[paramiko.Transport] = field(default_factory=set)
    _stopped: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _last_activity: float = field(default_factory=time.monotonic)

    @property
    def port(self) -> int:
        return int(self.listener.getsockname()[1])

    def known_hosts(self, hostname: str) -> str:
        """The known_hosts line a client needs for this port (`[host]:port type base64`)."""
        return f"[{hostname}]:{self.port} {key_line(self.host_key)}\n"

    def start(self) -> None:
        self.listener.settimeout(1.0)
        threading.Thread(
            target=self._accept_loop, name=f"rsync-{self.request_id}", daemon=True
        ).start()

    def stop(self) -> None:
        """Close the port and cut every open connection (idempotent)."""
        self._stopped.set()
        # shutdown first: it stops listening at once, even while accept() waits in a thread.
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self.listener.close()
        with self._lock:
            transports = list(self._transports)
        for transport in transports:
            transport.close()

    @property
    def stopped(self) -> bool:
        return self._stopped.is_set()

    def record(self, method: str, status: int, reason: str | None = None, **extra: int) -> None:
        answer = {"failures": [{"reason": reason}] if reason else []}
        self.calls.record(method, self.request_id, status, answer, extra=extra or None)

    def _accept_loop(self) -> None:
        while not self._stopped.is_set():
            try:
                sock, _ = self.listener.accept()
            except TimeoutError:
                with self._lock:
                    busy = bool(self._transports)
                if not busy and time.monotonic() - self._last_activity > self.idle_seconds:
                    log.info("transfer window of request %s closed (idle)", self.request_id)
                    self.stop()
                continue
            except OSError:
                return
            self._last_activity = time.monotonic()
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _serve(self, sock: socket.socket) -> None:
        sock.settimeout(None)
        transport = paramiko.Transport(sock, default_window_size=WINDOW_SIZE)
        transport.add_server_key(self.host_key)
        connection = _Connection(self)
        with self._lock:
            self._transports.add(transport)
        try:
            transport.start_server(server=connection)
            channel = transport.accept(timeout=HANDSHAKE_TIMEOUT)
            deadline = time.monotonic() + HANDSHAKE_TIMEOUT
            while channel is not None and not connection.exec_requested.wait(0.1):
                if not transport.is_active() or time.monotonic() > deadline:
                    return  # a shell asked (and refused), or nothing asked at all
            if channel is None:
                return
            assert connection.command is not None
            self._run(channel, transport, connection.command)
            # The client disconnects after the exit status; closing first would reset the TCP
            # connection under data it is still sending (ssh then fails with 255).
            deadline = time.monotonic() + CLOSE_GRACE
            while transport.is_active() and time.monotonic() < deadline:
                time.sleep(0.02)
        except (paramiko.SSHException, EOFError, OSError) as error:
            log.info(
                "ssh connection to request %s ended: %s", self.request_id, type(error).__name__
            )
        finally:
            transport.close()
            with self._lock:
                self._transports.discard(transport)
            self._last_activity = time.monotonic()

    def _run(self, channel: paramiko.Channel, transport: paramiko.Transport, command: str) -> None:
        method = f"rsync-{self.transfer_type}"
        try:
            checked = parse_server_command(command, sender=self.transfer_type == "download")
        except RsyncCommandRefused as why:
            log.info("request %s: ssh command refused: %s", self.request_id, why)
            channel.sendall_stderr(f"odoo-upgrade-emulator: refused: {why}\n".encode())
            channel.send_exit_status(1)
            channel.close()
            self.record(method, 403, "COMMAND:REFUSED")
            return
        drop_key = method
        cut = threading.Event()
        meter = _Meter(self.faults.drop_point(self.request_id, drop_key), cut)
        process = subprocess.Popen(
            checked.argv(self.rsync_binary),
            cwd=self.directory,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"},
            close_fds=True,
            start_new_session=True,
        )
        assert process.stdin and process.stdout and process.stderr

        cut_done = threading.Lock()

        def on_cut() -> None:
            if not cut_done.acquire(blocking=False):
                return  # both pumps may see the cut; act once
            self.faults.mark_dropped(self.request_id, drop_key)
            log.info("%s of request %s cut (fault)", method, self.request_id)
            transport.close()
            # EOF on its stdin lets rsync exit by itself and keep its partial file.
            with contextlib.suppress(OSError, ValueError):
                process.stdin.close()  # type: ignore[union-attr]

        pumps = [
            threading.Thread(target=_channel_to_pipe, args=(channel, process.stdin, meter, on_cut)),
            threading.Thread(
                target=_pipe_to_channel, args=(process.stderr, channel, None, on_cut, True)
            ),
        ]
        for pump in pumps:
            pump.daemon = True
            pump.start()
        _pipe_to_channel(process.stdout, channel, meter, on_cut, False)
        try:
            code = process.wait(timeout=EXIT_GRACE if cut.is_set() else None)
        except subprocess.TimeoutExpired:
            process.terminate()
            code = process.wait()
        pumps[1].join(timeout=5)
        if not cut.is_set():
            with contextlib.suppress(OSError, paramiko.SSHException):
                channel.send_exit_status(code if code >= 0 else 128 - code)  # signal: 128+n
                channel.close()
        self.record(
            method,
            499 if cut.is_set() else (200 if code == 0 else 500),
            "CONNECTION:CUT" if cut.is_set() else (None if code == 0 else f"RSYNC:EXIT_{code}"),
            bytes_received=meter.received,
            bytes_sent=meter.sent,
        )


def _channel_to_pipe(
    channel: paramiko.Channel, pipe: IO[bytes], meter: _Meter, on_cut: Callable[[], None]
) -> None:
    """Client -> rsync's stdin, counted; EOF (or a closed channel) closes the stdin."""
    try:
        while data := channel.recv(BLOCK):
            allowed = meter.allow(len(data), incoming=True)
            if allowed:
                pipe.write(data[:allowed])
                pipe.flush()
            if allowed < len(data):
                on_cut()
                return
    except (OSError, ValueError, EOFError, paramiko.SSHException):
        pass  # the client went away, or the cut closed the pipe
    finally:
        with contextlib.suppress(OSError, ValueError):
            pipe.close()


def _pipe_to_channel(
    pipe: IO[bytes],
    channel: paramiko.Channel,
    meter: _Meter | None,
    on_cut: Callable[[], None],
    stderr: bool,
) -> None:
    """rsync's stdout (or stderr) -> the client, counted; drained to the end even after a cut
    so that rsync can exit by itself."""
    broken = False
    fd = pipe.fileno()
    while data := os.read(fd, BLOCK):
        if broken:
            continue
        allowed = meter.allow(len(data), incoming=False) if meter is not None else len(data)
        try:
            if allowed:
                send = channel.sendall_stderr if stderr else channel.sendall
                send(data[:allowed])
        except (OSError, EOFError, paramiko.SSHException):
            broken = True
        if allowed < len(data):
            broken = True
            if meter is not None and meter.cut.is_set():
                on_cut()
    pipe.close()


class TransferWindows:
    """The open transfer endpoints, at most one per request."""

    def __init__(
        self,
        *,
        bind_host: str,
        host_key: paramiko.PKey,
        faults: FaultInjector,
        calls: CallLog,
        port_range: tuple[int, int] | None = None,
        idle_seconds: float = 300.0,
    ) -> None:
        self.bind_host = bind_host
        self.host_key = host_key
        self.faults = faults
        self.calls = calls
        self.port_range = port_range
        self.idle_seconds = idle_seconds
        self.rsync_binary = shutil.which("rsync")
        self._open: dict[int, TransferEndpoint] = {}
        self._lock = threading.Lock()

    def open(
        self, request_id: int, transfer_type: str, directory: Path, authorized_key: str
    ) -> TransferEndpoint:
        """The endpoint for this request and transfer type: the open one, or a new one."""
        if self.rsync_binary is None:
            raise RuntimeError("rsync is not installed where the emulator runs")
        with self._lock:
            current = self._open.get(request_id)
            if current is not None and not current.stopped:
                if current.transfer_type == transfer_type:
                    return current
                current.stop()
            endpoint = TransferEndpoint(
                request_id=request_id,
                transfer_type=transfer_type,
                directory=directory,
                authorized_key=authorized_key,
                host_key=self.host_key,
                listener=bind_listener(self.bind_host, self.port_range),
                faults=self.faults,
                calls=self.calls,
                rsync_binary=self.rsync_binary,
                idle_seconds=self.idle_seconds,
            )
            endpoint.start()
            self._open[request_id] = endpoint
            return endpoint

    def close(self, request_id: int) -> bool:
        """Close the request's endpoint; False if none was open."""
        with self._lock:
            endpoint = self._open.pop(request_id, None)
        if endpoint is None or endpoint.stopped:
            return False
        endpoint.stop()
        return True

    def close_all(self) -> None:
        with self._lock:
            endpoints = list(self._open.values())
            self._open.clear()
        for endpoint in endpoints:
            endpoint.stop()
