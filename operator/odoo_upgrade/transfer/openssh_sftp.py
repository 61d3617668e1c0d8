"""The data path of SFTP transfers through OpenSSH's own `sftp` client.

paramiko, in pure Python, moved 25-50 MiB/s where OpenSSH moved 100-200 MiB/s on the same
machine and server (bench/README.md), so the bytes of a transfer go through `sftp -b -`
while everything else stays ours: the host key is checked by paramiko first and pinned for
OpenSSH in a private known_hosts (`StrictHostKeyChecking=yes`, `IdentitiesOnly=yes`, no
agent, no user config); the resume offset and final size come from our own stat; progress
is read from the process (its file offset, or the part file's size); a watchdog kills a
transfer that stops moving; failures get our error reasons. The private key is written
only into a 0700 directory of our own and removed with it; it never reaches a command line.
"""

from __future__ import annotations

import math
import os
import pwd
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from odoo_upgrade.redact import redact
from odoo_upgrade.transfer.errors import (
    HostKeyMismatch,
    RemoteRefused,
    TransferError,
    TransferUnavailable,
)
from odoo_upgrade.transfer.part_file import PartFile
from odoo_upgrade.transfer.ssh_keys import fingerprint
from odoo_upgrade.transfer.ssh_timeouts import SshTimeouts

# AES-GCM first: with AES-NI it is about 1.4x faster than OpenSSH's default chacha20.
CIPHERS: Final = (
    "aes128-gcm@openssh.com,aes256-gcm@openssh.com,chacha20-poly1305@openssh.com,"
    "aes128-ctr,aes256-ctr"
)
# `sftp -R`/`-B` defaults: requests in flight and bytes per request.
REQUESTS: Final = 64
REQUEST_BYTES: Final = 32 * 1024
# Bytes of a download that may still be written out of order (requests in flight).
UNSETTLED: Final = REQUESTS * REQUEST_BYTES
POLL: Final = 0.05
HOST_ALIAS: Final = "odoo-upgrade-sftp"
# What `sftp` may be given as a remote name without quoting or glob surprises.
_PLAIN = re.compile(r"[A-Za-z0-9._+=@%,][A-Za-z0-9._+=@%,/-]*")
_CONNECTION_LOST = re.compile(
    r"Connection (closed|reset|refused|timed out)|Broken pipe|Timeout|timed out|"
    r"client_loop|Network is unreachable|No route to host|Could not resolve|"
    r"Connection to \S+ closed|kex_exchange_identification|Killed by signal"
)
_REFUSED_FILE = re.compile(r"not found|No such file|Permission denied")


def sftp_program() -> str | None:
    """Path of OpenSSH's `sftp`, or None when it is not installed."""
    return shutil.which("sftp")


def usable_for(remote_name: str) -> bool:
    """True when `sftp` is installed, can run as this user, and `remote_name` needs no
    quoting (else: paramiko)."""
    try:
        pwd.getpwuid(os.getuid())  # ssh refuses to run for a uid without a passwd entry
    except KeyError:
        return False
    return sftp_program() is not None and bool(_PLAIN.fullmatch(remote_name))


@dataclass(frozen=True)
class OpensshTarget:
    """Where and as whom `sftp` connects; `host_key` is the key line paramiko just checked."""

    hostname: str
    port: int
    user: str
    private_key_pem: str
    host_key: str
    timeouts: SshTimeouts

    def __repr__(self) -> str:  # keep the private key out of reprs
        return f"OpensshTarget({self.user}@{self.hostname}:{self.port})"


class SftpRun:
    """One `sftp -b -` process running `commands` in a private directory, supervised.

    `probe()` tells how far the transfer got (bytes); the process is killed when it has not
    moved for `timeouts.operation` seconds (after `timeouts.connect` to get going).
    """

    def __init__(self, target: OpensshTarget) -> None:
        self.target = target
        self.directory = Path(tempfile.mkdtemp(prefix="odoo-upgrade-sftp-"))  # 0700

    def close(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)

    def link(self, name: str, to: Path) -> Path:
        """A plain path in the private directory for a local file (no quoting needed)."""
        link = self.directory / name
        link.symlink_to(to.resolve())
        return link

    def _arguments(self) -> list[str]:
        target, directory = self.target, self.directory
        key = directory / "id"
        fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(target.private_key_pem)
        (directory / "known_hosts").write_text(f"{HOST_ALIAS} {target.host_key}\n")
        alive = max(1, math.floor(target.timeouts.operation / 3))
        options = {
            "IdentitiesOnly": "yes",
            "IdentityAgent": "none",
            "BatchMode": "yes",
            "PreferredAuthentications": "publickey",
            "StrictHostKeyChecking": "yes",
            "UserKnownHostsFile": str(directory / "known_hosts"),
            "GlobalKnownHostsFile": "/dev/null",
            "HostKeyAlias": HOST_ALIAS,
            "CheckHostIP": "no",
            "UpdateHostKeys": "no",
            "ControlMaster": "no",
            "ControlPath": "none",
            "ConnectTimeout": str(max(1, math.ceil(target.timeouts.connect))),
            "ServerAliveInterval": str(alive),
            "ServerAliveCountMax": "3",
            "LogLevel": "ERROR",
            "Hostname": target.hostname,
            "Port": str(target.port),
            "User": target.user,
        }
        program = sftp_program()
        if program is None:
            raise TransferError("OpenSSH's sftp is not installed")
        arguments = [program, "-b", "-", "-F", "/dev/null", "-i", str(key), "-c", CIPHERS]
        arguments += ["-R", str(REQUESTS), "-B", str(REQUEST_BYTES)]
        for name, value in options.items():
            arguments += ["-o", f"{name}={value}"]
        return [*arguments, HOST_ALIAS]

    def run(
        self,
        commands: list[str],
        what: str,
        probe: Callable[[int], int],
        on_progress: Callable[[], None] = lambda: None,
    ) -> None:
        """Run the batch; return once it succeeded, else raise with our error reasons.

        `probe(pid)` is called every few tens of milliseconds, `on_progress` after it moved.
        """
        timeouts = self.target.timeouts
        stderr_path = self.directory / "stderr"
        with open(stderr_path, "w+b") as stderr:
            process = subprocess.Popen(
                self._arguments(),
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
            stalled: str | None = None
            try:
                assert process.stdin is not None
                process.stdin.write("".join(f"{c}\n" for c in commands).encode())
                process.stdin.close()
                reached = -1
                deadline = time.monotonic() + timeouts.connect + timeouts.operation
                while process.poll() is None:
                    time.sleep(POLL)
                    now = time.monotonic()
                    position = probe(process.pid)
                    if position > reached:
                        reached = position
                        deadline = now + timeouts.operation
                        on_progress()
                    elif now > deadline:
                        stalled = f"{what}: no byte moved for {timeouts.operation:g} s; timed out"
                        break
            finally:
                if process.poll() is None:
                    _stop(process)
            if stalled is not None:
                raise TransferUnavailable(stalled)
            if process.returncode != 0:
                stderr.seek(0)
                raise self._failure(what, stderr.read().decode("utf-8", "replace"))

    def _failure(self, what: str, stderr: str) -> TransferError:
        target = self.target
        where = f"{target.hostname}:{target.port}"
        text = redact(" ".join(stderr.split())[-500:]) or "no message"
        if "Host key verification failed" in stderr or "IDENTIFICATION HAS CHANGED" in stderr:
            return HostKeyMismatch(
                target.hostname, target.port, fingerprint(target.host_key), "a key OpenSSH refused"
            )
        if "Permission denied (publickey" in stderr:
            return RemoteRefused(f"SFTP server {where} refused the key of user {target.user}")
        if _CONNECTION_LOST.search(stderr):
            return TransferUnavailable(f"{what}: connection lost ({text})")
        if _REFUSED_FILE.search(stderr):
            return RemoteRefused(f"{what}: the SFTP server refused it ({text})")
        return TransferUnavailable(f"{what}: OpenSSH sftp failed ({text})")


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(2)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _quoted(path: str) -> str:
    return f'"{path}"'


class _ReadOffset:
    """How far a process has read a file: the offset of its descriptor (Linux /proc)."""

    def __init__(self, path: Path) -> None:
        self.path = str(path.resolve())
        self.fd: str | None = None

    def __call__(self, pid: int) -> int:
        try:
            if self.fd is None:
                for fd in os.listdir(f"/proc/{pid}/fd"):
                    if os.readlink(f"/proc/{pid}/fd/{fd}") == self.path:
                        self.fd = fd
                        break
                else:
                    return 0
            with open(f"/proc/{pid}/fdinfo/{self.fd}") as info:
                for line in info:
                    if line.startswith("pos:"):
                        return int(line.split()[1])
        except (OSError, ValueError):
            pass
        return 0


def put(
    target: OpensshTarget,
    source: Path,
    remote_name: str,
    offset: int,
    report: Callable[[int], None],
) -> None:
    """Send `source` to `remote_name`, appending from `offset` (the remote size) like `put -a`."""
    run = SftpRun(target)
    try:
        local = run.link("source", source)
        command = "put -a" if offset else "put"
        read_offset = _ReadOffset(source)
        position = {"at": offset}

        def probe(pid: int) -> int:
            position["at"] = max(position["at"], read_offset(pid))
            return position["at"]

        run.run(
            [f"{command} {_quoted(str(local))} {_quoted(remote_name)}"],
            f"upload of {source.name}",
            probe,
            lambda: report(position["at"]),
        )
    finally:
        run.close()


def get(
    target: OpensshTarget,
    remote_name: str,
    part: PartFile,
    report: Callable[[int], None],
) -> None:
    """Fetch `remote_name` into `part` from its current size on (like `get -a`), hashing the
    bytes as they settle. On failure the last `UNSETTLED` bytes are cut off: requests
    answered out of order may have left a hole there, and a resume must never continue
    after one."""
    run = SftpRun(target)
    try:
        local = run.link("part", part.path)

        def probe(pid: int) -> int:
            part.absorb(upto=os.stat(part.path).st_size - UNSETTLED)
            return part.size

        try:
            run.run(
                [f"get -a {_quoted(remote_name)} {_quoted(str(local))}"],
                f"download of {remote_name}",
                probe,
                lambda: report(part.size),
            )
        except BaseException:
            # sftp exits on a lost connection without cutting back to its contiguous bytes.
            part.absorb(upto=os.stat(part.path).st_size - UNSETTLED)
            part.drop_unhashed()
            raise
        part.absorb()
        report(part.size)
    finally:
        run.close()
