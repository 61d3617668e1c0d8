"""SFTP upload (append resume from the remote size) and download (resume into `.part`).

Blocking; async callers use `asyncio.to_thread`. paramiko checks the host key, logs in and
stats; the bytes go through OpenSSH's `sftp` when it is installed (`openssh_sftp.py`), else
through paramiko with a large SSH window, pipelined writes and prefetched reads.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Literal

import paramiko

from odoo_upgrade.platform.models import SftpAccess
from odoo_upgrade.platform.retry import RetryPolicy
from odoo_upgrade.transfer import openssh_sftp
from odoo_upgrade.transfer.binding import DownloadBinding
from odoo_upgrade.transfer.errors import (
    RemoteRefused,
    SizeMismatch,
    TransferError,
    TransferUnavailable,
)
from odoo_upgrade.transfer.idle_hash import IdleHash
from odoo_upgrade.transfer.part_file import PartFile, hash_mapped, published_download
from odoo_upgrade.transfer.results import ProgressCallback, TransferResult
from odoo_upgrade.transfer.ssh_keys import (
    BACKSTOP,
    HostKeyCheck,
    load_private_key,
    start_transport,
)
from odoo_upgrade.transfer.ssh_timeouts import SshTimeouts, StepDeadline

log = logging.getLogger("odoo_upgrade.transfer")

WINDOW_SIZE = 32 * 1024 * 1024
MAX_PACKET_SIZE = 64 * 1024
# Local reads: large, so that Python work per byte stays small.
BLOCK = 1024 * 1024
# One SFTP write/read request; 32 KiB is what every server accepts (OpenSSH's default too).
REQUEST_SIZE = 32 * 1024
# Bytes of an SFTP write message around its data (length, type, id, handle, offset).
WRITE_OVERHEAD = 64
PREFETCH_REQUESTS = 64
# paramiko download: bytes requested (and held in memory) at a time.
FETCH_WINDOW = 2 * 1024 * 1024
BACKOFF = RetryPolicy(attempts=1_000, base_delay=0.5, max_delay=8.0)


@contextlib.contextmanager
def connect_sftp(
    hostname: str,
    port: int,
    user: str,
    pkey: paramiko.PKey,
    host_key: HostKeyCheck,
    *,
    timeouts: SshTimeouts | None = None,
    window_size: int = WINDOW_SIZE,
    max_packet_size: int = MAX_PACKET_SIZE,
) -> Iterator[tuple[paramiko.SFTPClient, HostKeyCheck]]:
    """An authenticated SFTP client and the host key check to reconnect with.

    Every step is bounded: TCP, banner, key exchange, authentication, channel, subsystem and
    SFTP version within `timeouts.connect` each; then each request (and each wait for SSH
    window) within `timeouts.operation`. A stall is a transient `TransferUnavailable`.
    Raises `HostKeyMismatch` and `RemoteRefused` (key not accepted) as permanent failures.
    """
    bounds = timeouts or SshTimeouts()
    where = f"{hostname}:{port}"
    transport = start_transport(
        hostname,
        port,
        pinned=host_key.pinned,
        timeouts=bounds,
        default_window_size=window_size,
        default_max_packet_size=max_packet_size,
    )
    try:
        try:
            checked = host_key.verify(hostname, port, transport.get_remote_server_key())
            try:
                with StepDeadline(transport, bounds.connect, "authenticating", where):
                    transport.auth_publickey(user, pkey)
            except paramiko.AuthenticationException as exc:
                if not transport.is_active():  # the connection dropped: not a refusal
                    raise TransferUnavailable(
                        f"SFTP server {where} closed the connection while authenticating ({exc})"
                    ) from None
                raise RemoteRefused(f"SFTP server {where} refused the key of user {user}") from None
            with StepDeadline(transport, bounds.connect, "starting SFTP", where):
                channel = transport.open_session(
                    window_size=window_size,
                    max_packet_size=max_packet_size,
                    timeout=bounds.connect + BACKSTOP,
                )
                channel.settimeout(bounds.operation)
                channel.invoke_subsystem("sftp")
                sftp = paramiko.SFTPClient(channel)
        except _DROPS as exc:
            raise _classify(exc, f"SFTP session with {where}") from None
        try:
            yield sftp, checked
        finally:
            sftp.close()
    finally:
        transport.close()


class _Session:
    """One authenticated SFTP connection; remembers the host key check for reconnections."""

    def __init__(
        self,
        access: SftpAccess,
        pkey: paramiko.PKey,
        host_key: HostKeyCheck,
        timeouts: SshTimeouts | None,
    ) -> None:
        self.access, self.pkey, self.host_key = access, pkey, host_key
        self.timeouts = timeouts or SshTimeouts()

    @contextlib.contextmanager
    def open(self) -> Iterator[paramiko.SFTPClient]:
        access = self.access
        with connect_sftp(
            access.hostname,
            access.port,
            access.user,
            self.pkey,
            self.host_key,
            timeouts=self.timeouts,
        ) as (sftp, checked):
            self.host_key = checked
            # The control connection idles while OpenSSH moves the bytes: keep it alive.
            sftp.get_channel().get_transport().set_keepalive(15)  # type: ignore[union-attr]
            yield sftp

    def openssh_target(self, private_key_pem: str) -> openssh_sftp.OpensshTarget:
        """Where OpenSSH connects, with the host key paramiko has just checked."""
        assert self.host_key.pinned is not None  # set by the first verification
        return openssh_sftp.OpensshTarget(
            hostname=self.access.hostname,
            port=self.access.port,
            user=self.access.user,
            private_key_pem=private_key_pem,
            host_key=self.host_key.pinned,
            timeouts=self.timeouts,
        )


SftpClient = Literal["auto", "openssh", "paramiko"]


def _use_openssh(client: SftpClient, remote_name: str) -> bool:
    """`auto`: OpenSSH's sftp for the bytes when installed (and the name needs no quoting)."""
    if client == "paramiko":
        return False
    usable = openssh_sftp.usable_for(remote_name)
    if client == "openssh" and not usable:
        raise TransferError(
            f"OpenSSH's sftp is not installed, or cannot be given the name {remote_name!r}"
        )
    return usable


def _classify(exc: BaseException, what: str) -> TransferError:
    """Permanent for refusals by the server, transient for dropped or stalled connections."""
    if isinstance(exc, TransferError):
        return exc
    if isinstance(exc, PermissionError | FileNotFoundError):
        return RemoteRefused(f"{what}: the SFTP server refused it ({exc})")
    if isinstance(exc, TimeoutError):
        return TransferUnavailable(f"{what}: the SFTP server stopped answering; timed out")
    return TransferUnavailable(f"{what}: connection lost ({type(exc).__name__}: {exc})")


_DROPS = (paramiko.SSHException, EOFError, OSError)


def _with_resume(
    what: str,
    max_attempts: int,
    attempt: Callable[[], None],
    position: Callable[[], int],
) -> int:
    """Run `attempt` until it completes; return the number of attempts.

    `position` tells how far the transfer got; only attempts that did not move it forward
    count against `max_attempts`, so a long transfer over a flaky link still finishes.
    """
    attempts = stalled = 0
    while True:
        attempts += 1
        before = position()
        try:
            attempt()
            return attempts
        except TransferError as exc:
            if not exc.transient:
                raise
            error: TransferError = exc
        except _DROPS as exc:
            error = _classify(exc, what)
            if not error.transient:
                raise error from None
        stalled = 0 if position() > before else stalled + 1
        log.debug("%s: attempt %d ended: %s", what, attempts, error)
        if stalled >= max_attempts:
            raise TransferUnavailable(
                f"{what}: failed {stalled} times in a row without progress ({error})"
            ) from None
        time.sleep(BACKOFF.delay_before(stalled + 1) if stalled else 0.0)


class _LocalHash:
    """sha256 of a local file, advanced as its bytes are sent (and re-read where skipped)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.hasher = hashlib.sha256()
        self.upto = 0

    def advance_to(self, offset: int) -> None:
        if offset < self.upto:
            self.hasher, self.upto = hashlib.sha256(), 0
        if offset <= self.upto:
            return
        with open(self.path, "rb") as file:
            if os.fstat(file.fileno()).st_size < offset:
                raise SizeMismatch(f"{self.path} shrank while being uploaded")
            while self.upto < offset:
                self.upto = hash_mapped(file.fileno(), self.hasher, self.upto, offset)

    def update(self, block: bytes) -> None:
        self.hasher.update(block)
        self.upto += len(block)


def upload_sftp(
    access: SftpAccess,
    private_key_pem: str,
    path: str | os.PathLike[str],
    *,
    host_key: HostKeyCheck,
    progress: ProgressCallback | None = None,
    max_attempts: int = 5,
    timeouts: SshTimeouts | None = None,
    client: SftpClient = "auto",
) -> TransferResult:
    """Upload `path` as `access.shared_file`, resuming from the remote size after each drop.

    Like `sftp put -a`: appends from what the server has. Succeeds only when the remote size
    equals the local size. Raises `HostKeyMismatch`, `RemoteRefused`, `SizeMismatch`, or
    `TransferUnavailable` after `max_attempts` attempts in a row without progress.

    The host key check, sizes and resume offset go through paramiko; the bytes through
    OpenSSH's `sftp` when installed (`client="auto"`; several times faster), else paramiko.
    """
    source = Path(path)
    size = source.stat().st_size
    with open(source, "rb"):
        pass  # unreadable source: the local OSError now, not a "server refused" later
    session = _Session(access, load_private_key(private_key_pem), host_key, timeouts)
    name = access.shared_file
    reached = {"bytes": 0}
    openssh = _use_openssh(client, name)
    # paramiko's data path hashes the blocks it sends (and re-reads what it skips);
    # OpenSSH's, the whole file beside `sftp`, once for every attempt.
    local_hash = _LocalHash(source)

    def attempt() -> None:
        with session.open() as sftp:
            try:
                remote = sftp.stat(name).st_size or 0
            except FileNotFoundError:
                remote = 0
            reached["bytes"] = max(reached["bytes"], remote)
            if remote > size:
                raise SizeMismatch(
                    f"upload: the remote {name} already holds {remote} bytes, more than the "
                    f"{size} of {source.name}; it is another file, not resuming"
                )
            if openssh:
                if remote < size:
                    openssh_sftp.put(
                        session.openssh_target(private_key_pem),
                        source,
                        name,
                        remote,
                        lambda done: progress(done, size) if progress else None,
                    )
            else:
                local_hash.advance_to(remote)
                if remote < size:
                    _append(sftp, name, source, remote, size, local_hash, progress)
            final = sftp.stat(name).st_size or 0
            reached["bytes"] = max(reached["bytes"], final)
            if final != size:
                raise TransferUnavailable(
                    f"upload: the server holds {final} of {size} bytes after sending"
                )
            if progress:
                # OpenSSH's progress is sampled from its file offset: a fast last stretch
                # ends between two samples, so the whole size is reported here.
                progress(size, size)

    with IdleHash(source) if openssh else contextlib.nullcontext() as beside:
        attempts = _with_resume(
            f"upload of {source.name}", max_attempts, attempt, lambda: reached["bytes"]
        )
        digest = beside.finish(size) if beside else local_hash.hasher.hexdigest()
    return TransferResult(bytes=size, sha256=digest, attempts=attempts)


def _append(
    sftp: paramiko.SFTPClient,
    name: str,
    source: Path,
    offset: int,
    size: int,
    local_hash: _LocalHash,
    progress: ProgressCallback | None,
) -> None:
    # "a" is what `put -a` sends (write, create, append): never truncates what is there.
    channel = sftp.get_channel()
    assert channel is not None
    # A write that fits one SSH packet of the server's size is not split in two.
    write_size = max(4096, min(REQUEST_SIZE, channel.out_max_packet_size - WRITE_OVERHEAD))
    with sftp.open(name, "a", bufsize=0) as remote, open(source, "rb") as local:
        remote.set_pipelined(True)
        remote.seek(offset)
        local.seek(offset)
        while offset < size:
            block = local.read(min(BLOCK, size - offset))
            if not block:
                raise SizeMismatch(f"upload: {source} shrank while being sent")
            for start in range(0, len(block), write_size):
                remote.write(block[start : start + write_size])
            local_hash.update(block)
            offset += len(block)
            if progress:
                progress(offset, size)


def download_sftp(
    access: SftpAccess,
    private_key_pem: str,
    remote_name: str,
    destination: str | os.PathLike[str],
    *,
    host_key: HostKeyCheck,
    progress: ProgressCallback | None = None,
    max_attempts: int = 5,
    timeouts: SshTimeouts | None = None,
    binding: DownloadBinding | None = None,
    client: SftpClient = "auto",
) -> TransferResult:
    """Download `remote_name` to `destination` with resume; same atomic finish as HTTPS.

    Never overwrites an existing destination (`DestinationExists`); bytes go to
    `.<name>.part`, then size check, fsync, link under the final name, `<name>.sha256`.

    With a `binding`, a part is continued only if it was written for the same request from
    the same remote file name at the same size and mtime (else it starts at byte 0), and a
    destination this request already published is recognised (`published_download`) and its
    result returned instead of `DestinationExists`. The bytes go through OpenSSH's `sftp`
    when installed (`client="auto"`), else paramiko; stat and host key through paramiko.
    """
    openssh = _use_openssh(client, remote_name)
    if binding is not None and (done := published_download(destination, binding)) is not None:
        return done
    session = _Session(access, load_private_key(private_key_pem), host_key, timeouts)
    # Whichever client runs now, the part may be one OpenSSH's sftp was killed writing.
    part = PartFile.open(
        destination,
        binding=binding,
        source=f"sftp:{remote_name}",
        unsettled=openssh_sftp.UNSETTLED,
    )
    total = {"bytes": 0}

    def attempt() -> None:
        with session.open() as sftp:
            attributes = sftp.stat(remote_name)
            size = attributes.st_size or 0
            total["bytes"] = size
            mtime = attributes.st_mtime
            origin = part.new_origin(size, "" if mtime is None else f"size={size} mtime={mtime}")
            if origin is not None:
                if part.size and (origin != part.origin or not origin.validator):
                    part.restart()  # another (or an unprovable) version: bytes do not continue
                part.set_origin(origin)
            if part.size > size:
                part.restart()
            if part.size < size and openssh:
                openssh_sftp.get(
                    session.openssh_target(private_key_pem),
                    remote_name,
                    part,
                    lambda done: progress(done, size) if progress else None,
                )
            elif part.size < size:
                _fetch(sftp, remote_name, part, size, progress)

    try:
        attempts = _with_resume(
            f"download of {remote_name}", max_attempts, attempt, lambda: part.size
        )
        digest = part.finish(total["bytes"], attempts=attempts)
    finally:
        part.close()
    return TransferResult(bytes=total["bytes"], sha256=digest, attempts=attempts)


def _fetch(
    sftp: paramiko.SFTPClient,
    name: str,
    part: PartFile,
    size: int,
    progress: ProgressCallback | None,
) -> None:
    """paramiko's data path: pipelined reads one `FETCH_WINDOW` at a time (paramiko's
    prefetch of a whole file buffers what the disk has not taken yet: unbounded memory)."""
    with sftp.open(name, "r", bufsize=0) as remote:
        try:
            while part.size < size:
                start = part.size
                window = min(FETCH_WINDOW, size - start)
                chunks = [
                    (offset, min(REQUEST_SIZE, start + window - offset))
                    for offset in range(start, start + window, REQUEST_SIZE)
                ]
                batch: list[bytes] = []
                try:
                    for piece in remote.readv(
                        chunks, max_concurrent_prefetch_requests=PREFETCH_REQUESTS
                    ):
                        batch.append(piece)
                finally:
                    # Keep what arrived before a drop: the next attempt resumes after it.
                    if batch:
                        part.append(b"".join(batch))
                received = part.size - start
                if received < window:
                    raise TransferUnavailable(
                        f"download: {name} ended at {part.size} of {size} bytes"
                    )
                if progress:
                    progress(part.size, size)
        finally:
            if progress:
                progress(part.size, size)
