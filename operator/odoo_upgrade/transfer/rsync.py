"""rsync over OpenSSH `ssh` for the `upgrade/request` API: upload the dump, download the set.

The real `rsync` and `ssh` binaries run as subprocesses. ssh trusts exactly the `known_hosts`
lines `transfer/start` gave (`StrictHostKeyChecking=yes`, a private `UserKnownHostsFile`, no
global file), logs in with the request's key only (from a 0600 file in a private temporary
directory: never on a command line, no agent), and reads no ssh config. Interrupted transfers
resume: rsync keeps partial files in `--partial-dir` (beside the file on the receiving side,
inside this request's directory, never under the final name) and reuses them next time.
A download is published as a directory: received under `.<name>.part/`, `SHA256SUMS` written,
everything fsynced, then renamed to `<name>` (never over an existing one).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import fcntl
import hashlib
import logging
import os
import re
import shutil
import signal
import tempfile
import threading
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from odoo_upgrade.noreplace import rename_without_replacing
from odoo_upgrade.platform.retry import RetryPolicy
from odoo_upgrade.platform.upgrade_request import TransferWindow, host_of
from odoo_upgrade.redact import redact
from odoo_upgrade.request.upgraded import FILESTORE_NAME, LOG_NAME, REPORT_NAME, SHA256SUMS
from odoo_upgrade.transfer.binding import (
    DownloadBinding,
    PartOrigin,
    Receipt,
    clear_origin,
    read_origin,
    read_receipt,
    source_digest,
    write_origin,
    write_receipt,
)
from odoo_upgrade.transfer.errors import (
    DestinationExists,
    HostKeyMismatch,
    RemoteRefused,
    TransferError,
    TransferUnavailable,
)
from odoo_upgrade.transfer.file_digest import file_sha256
from odoo_upgrade.transfer.part_file import fsync_directory, refuse_existing
from odoo_upgrade.transfer.results import ProgressCallback
from odoo_upgrade.transfer.ssh_keys import fingerprint

log = logging.getLogger("odoo_upgrade.transfer")

SSH_USER = "odoo"
REMOTE_ROOT = "/data"
UPLOAD_NAMES = ("origin.dump", "origin.sql", "origin.sql.gz", "origin.zip")
PARTIAL_DIR = ".odoo-upgrade-partial"
CONNECT_TIMEOUT = 15
IO_TIMEOUT = 300
BACKOFF = RetryPolicy(attempts=1_000, base_delay=0.5, max_delay=8.0)
STDERR_LINES = 40
_PROGRESS = re.compile(rb"^\s*(\d+)\s+(\d+)%")
_SAFE_PATH = re.compile(r"^[A-Za-z0-9_./+-]+$")
# rsync exit codes after which the same transfer may succeed (drops, timeouts, signals).
TRANSIENT_EXIT_CODES = frozenset({10, 12, 20, 30, 35, 255})


# -- what to transfer where -----------------------------------------------------------------


@dataclass(frozen=True)
class RsyncEndpoint:
    """Where one transfer goes: `odoo@<host>` on the window's port, trusting `known_hosts`."""

    host: str
    port: int
    known_hosts: str
    user: str = SSH_USER

    @classmethod
    def for_window(cls, request_host: str, window: TransferWindow) -> RsyncEndpoint:
        """The endpoint of a `transfer/start` answer on the request's host (`host[:port]`)."""
        return cls(host=host_of(request_host), port=window.ssh_port, known_hosts=window.known_hosts)

    def remote(self, path: str) -> str:
        """rsync's `user@host:path` (an IPv6 address in brackets)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.user}@{host}:{path}"

    def trusted_fingerprints(self) -> list[str]:
        """Fingerprints of the host keys in `known_hosts` (for error messages)."""
        found = []
        for line in self.known_hosts.splitlines():
            words = line.split()
            if words and words[0].startswith("@"):
                words = words[1:]
            with contextlib.suppress(ValueError, IndexError):
                found.append(fingerprint(f"{words[1]} {words[2]}"))
        return found


def remote_dump_name(source: Path) -> str:
    """The name the platform expects for `source` under `/data/`: the format, from content.

    A directory holding `toc.dat` or a pg_dump custom file is `origin.dump`; a zip (Odoo's
    backup) `origin.zip`; gzip `origin.sql.gz`; plain text `origin.sql`.
    """
    if source.is_dir():
        if (source / "toc.dat").is_file():
            return "origin.dump"
        raise TransferError(
            f"{source} is a directory without toc.dat: not a pg_dump directory-format dump"
        )
    with source.open("rb") as stream:
        head = stream.read(4096)
    if head.startswith(b"PGDMP"):
        return "origin.dump"
    if head.startswith(b"PK\x03\x04"):
        return "origin.zip"
    if head.startswith(b"\x1f\x8b"):
        return "origin.sql.gz"
    if head and b"\x00" not in head:
        return "origin.sql"
    raise TransferError(
        f"cannot tell the format of {source.name}: expected a pg_dump custom or directory "
        "dump, plain SQL, gzipped SQL or an Odoo backup zip"
    )


# -- ssh and rsync command lines ------------------------------------------------------------


def ssh_command(endpoint: RsyncEndpoint, key_file: Path, known_hosts_file: Path) -> str:
    """The `-e` value: OpenSSH with strict host keys, this key only, no config, no agent."""
    for path in (key_file, known_hosts_file):
        if not _SAFE_PATH.match(str(path)):
            raise TransferError(f"unsafe characters in the temporary path {path}")
    options = {
        "StrictHostKeyChecking": "yes",
        "UserKnownHostsFile": str(known_hosts_file),
        "GlobalKnownHostsFile": "/dev/null",
        "CheckHostIP": "no",
        "UpdateHostKeys": "no",
        "IdentitiesOnly": "yes",
        "IdentityAgent": "none",
        "BatchMode": "yes",
        "PreferredAuthentications": "publickey",
        "PasswordAuthentication": "no",
        "KbdInteractiveAuthentication": "no",
        "ConnectTimeout": str(CONNECT_TIMEOUT),
        "ServerAliveInterval": "15",
        "ServerAliveCountMax": "4",
        "ForwardAgent": "no",
        "ForwardX11": "no",
        "ClearAllForwardings": "yes",
        "RequestTTY": "no",
        "ControlMaster": "no",
        "ControlPath": "none",
        "LogLevel": "ERROR",
    }
    words = ["ssh", "-F", "none", "-p", str(endpoint.port), "-i", str(key_file)]
    for name, value in options.items():
        words += ["-o", f"{name}={value}"]
    return " ".join(words)


def rsync_args(ssh: str, io_timeout: int, *extra: str) -> list[str]:
    """The options every transfer uses, then `extra` (sources and destination last)."""
    return [
        "rsync",
        "--recursive",
        "--times",
        f"--partial-dir={PARTIAL_DIR}",
        "--info=progress2",
        "--no-human-readable",
        "--no-inc-recursive",
        f"--timeout={io_timeout}",
        "-e",
        ssh,
        *extra,
    ]


@contextlib.contextmanager
def _ssh_files(private_key_pem: str, known_hosts: str) -> Iterator[tuple[Path, Path, Path]]:
    """A private directory (0700) with the key (0600) and the known_hosts file; removed after."""
    with tempfile.TemporaryDirectory(prefix="odoo-upgrade-ssh-") as name:
        directory = Path(name)
        os.chmod(directory, 0o700)
        key = directory / "id_request"
        known = directory / "known_hosts"
        pem = private_key_pem if private_key_pem.endswith("\n") else private_key_pem + "\n"
        for path, text in ((key, pem), (known, known_hosts)):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as stream:
                stream.write(text)
        yield key, known, directory


# -- running rsync ----------------------------------------------------------------------------


@dataclass(frozen=True)
class RsyncRun:
    """How one rsync process ended: exit code, the last lines of stderr, furthest progress."""

    code: int
    stderr: str
    bytes_done: int


def classify_failure(run: RsyncRun, endpoint: RsyncEndpoint, what: str) -> TransferError:
    """Map a failed run onto the transfer errors: permanent refusals, transient drops."""
    text = run.stderr
    short = redact(" | ".join(line for line in text.splitlines() if line.strip())[-600:])
    where = f"{endpoint.host}:{endpoint.port}"
    if (
        "Host key verification failed" in text
        or "REMOTE HOST IDENTIFICATION HAS CHANGED" in text
        or "host key is known for" in text
    ):
        got = re.search(r"SHA256:[A-Za-z0-9+/]+", text)
        return SshHostKeyMismatch(
            endpoint.host,
            endpoint.port,
            ", ".join(endpoint.trusted_fingerprints()) or "the known_hosts from transfer/start",
            got.group(0) if got else "a key that is not in them",
        )
    if "Permission denied (publickey" in text or "Too many authentication failures" in text:
        return RemoteRefused(f"{what}: the SSH server {where} refused the request's key")
    if run.code in TRANSIENT_EXIT_CODES:
        return TransferUnavailable(
            f"{what}: connection to {where} lost (rsync {run.code}: {short})"
        )
    if "No such file or directory" in text and run.code in (23, 11):
        return RemoteRefused(f"{what}: a file is missing (rsync {run.code}: {short})")
    return TransferError(f"{what}: rsync failed with exit code {run.code}: {short}")


class SshHostKeyMismatch(HostKeyMismatch):
    """The transfer host presented a key that is not in the `known_hosts` of `transfer/start`."""

    reason = "SSH:HOST_KEY_MISMATCH"

    def __init__(self, host: str, port: int, expected: str, got: str) -> None:
        self.host, self.port, self.expected, self.got = host, port, expected, got
        TransferError.__init__(
            self,
            f"SSH host key of {host}:{port} is not one of those transfer/start named: expected "
            f"{expected}, got {got}; refusing to connect (nothing was transferred)",
        )


_PR_SET_PDEATHSIG = 1
_prctl = getattr(ctypes.CDLL(None, use_errno=True), "prctl", None)


def _end_with_parent() -> None:
    """In rsync before exec: SIGTERM (rsync keeps its partial file) when the process that ran
    it dies, as the kernel does to a container's processes when its first one dies. A mover
    SIGKILLed outside a container must not leave an rsync writing into the part directory."""
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _clean_env(home: Path) -> dict[str, str]:
    """No agent socket, no RSYNC_* defaults (RSYNC_PROTECT_ARGS...), C locale for parsing."""
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "LC_ALL": "C"}


async def run_rsync(
    args: list[str], env: dict[str, str], on_progress: Callable[[int, int], None]
) -> RsyncRun:
    """Run rsync once; `on_progress(bytes, percent)` for each `--info=progress2` line."""
    process = await asyncio.create_subprocess_exec(
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
        start_new_session=True,
        preexec_fn=_end_with_parent,  # one prctl call, resolved beforehand
    )
    assert process.stdout is not None and process.stderr is not None
    furthest = 0
    tail: deque[str] = deque(maxlen=STDERR_LINES)

    async def read_progress() -> None:
        nonlocal furthest
        assert process.stdout is not None
        pending = b""
        while chunk := await process.stdout.read(65536):
            pending += chunk
            *lines, pending = re.split(rb"[\r\n]", pending)
            for line in lines:
                match = _PROGRESS.match(line)
                if match:
                    furthest = max(furthest, int(match.group(1)))
                    on_progress(int(match.group(1)), int(match.group(2)))

    async def read_errors() -> None:
        assert process.stderr is not None
        while line := await process.stderr.readline():
            tail.append(line.decode("utf-8", "replace").rstrip())

    try:
        await asyncio.gather(read_progress(), read_errors())
        code = await process.wait()
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            process.terminate()  # rsync keeps its partial file on SIGTERM
        with contextlib.suppress(Exception):
            await asyncio.wait_for(process.wait(), timeout=10)
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        raise
    return RsyncRun(code=code, stderr="\n".join(tail), bytes_done=furthest)


async def _with_retries(
    what: str,
    endpoint: RsyncEndpoint,
    max_attempts: int,
    attempt: Callable[[], Awaitable[RsyncRun]],
    position: Callable[[], int],
) -> int:
    """Run `attempt` until rsync exits 0; the number of runs. Only runs that did not move
    `position` forward count against `max_attempts`."""
    runs = stalled = 0
    furthest = position()
    while True:
        runs += 1
        run = await attempt()
        if run.code == 0:
            return runs
        error = classify_failure(run, endpoint, what)
        if not error.transient:
            raise error
        now = position()
        stalled = 0 if now > furthest else stalled + 1
        furthest = max(furthest, now)
        log.info("%s: run %d ended: %s", what, runs, error)
        if stalled >= max_attempts:
            raise TransferUnavailable(
                f"{what}: failed {stalled} times in a row without progress ({error})"
            )
        await asyncio.sleep(BACKOFF.delay_before(stalled + 1) if stalled else 0.0)


# -- local files ------------------------------------------------------------------------------


def _files(root: Path) -> list[Path]:
    """Regular files under `root` (or `root` itself), sorted by relative path."""
    if root.is_file():
        return [root]
    found = []
    for directory, dirs, names in os.walk(root):
        dirs.sort()
        found += [Path(directory) / n for n in sorted(names)]
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def sha256sums_line(sha256_hex: str, relative: str) -> str:
    """One line of `sha256sum` output (names with a newline or backslash escaped like it)."""
    if "\\" in relative or "\n" in relative or "\r" in relative:
        escaped = relative.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")
        return f"\\{sha256_hex}  {escaped}\n"
    return f"{sha256_hex}  {relative}\n"


def sha256sums_text(root: Path, *, fsync: bool = False) -> str:
    """`SHA256SUMS` of every file under `root`, relative paths, sorted (not itself)."""
    lines = []
    for path in _files(root):
        relative = path.relative_to(root).as_posix()
        if relative != SHA256SUMS:
            lines.append(sha256sums_line(file_sha256(path, fsync=fsync), relative))
    return "".join(lines)


def _tree_bytes(root: Path) -> int:
    total = 0
    for directory, _, names in os.walk(root):
        for name in names:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(directory, name)).st_size
    return total


def _upload_digest(source: Path, stop: threading.Event) -> str:
    """sha256 of a file; of a directory, the sha256 of its SHA256SUMS text. Hashed while
    rsync sends; `stop` ends it early when the upload failed."""
    if source.is_file():
        return file_sha256(source, stop=stop)
    lines = []
    for path in _files(source):
        relative = path.relative_to(source).as_posix()
        lines.append(sha256sums_line(file_sha256(path, stop=stop), relative))
    return hashlib.sha256("".join(lines).encode()).hexdigest()


def rename_noreplace(source: Path, destination: Path) -> None:
    """Rename `source` to `destination`, failing with `DestinationExists` if that exists."""
    if not rename_without_replacing(source, destination):
        raise DestinationExists(
            f"destination {destination} appeared while downloading; it was left untouched "
            f"and the download kept in {source}"
        )


# -- results ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RsyncUploadResult:
    """A finished upload: what went to `/data/<remote_name>`, its size, digest and runs.

    `sha256` is the file's; for a directory dump, that of its `SHA256SUMS` text.
    """

    remote_name: str
    bytes: int
    files: int
    sha256: str
    attempts: int

    def to_json(self) -> dict[str, int | str]:
        return {
            "bytes": self.bytes,
            "sha256": self.sha256,
            "attempts": self.attempts,
            "files": self.files,
            "remoteName": self.remote_name,
        }


@dataclass(frozen=True)
class DownloadedSet:
    """A published download: the directory, its files (SHA256SUMS not counted), their bytes,
    where the dump, report and log are (None when the platform had none), the sha256 of
    `SHA256SUMS`, and the rsync runs it took."""

    path: Path
    files: int
    bytes: int
    dump_path: Path
    report_path: Path | None
    log_path: Path | None
    sha256sums: str
    attempts: int

    def to_json(self) -> dict[str, int | str | None]:
        """For a termination message: paths relative to the set's directory."""

        def relative(path: Path | None) -> str | None:
            return None if path is None else path.relative_to(self.path).as_posix()

        return {
            "files": self.files,
            "bytes": self.bytes,
            "dump": relative(self.dump_path),
            "report": relative(self.report_path),
            "log": relative(self.log_path),
            "sha256sums": self.sha256sums,
            "attempts": self.attempts,
        }


# -- upload and download ------------------------------------------------------------------------


def _prepare_upload(path: Path, remote_name: str | None) -> tuple[str, list[tuple[Path, int]], str]:
    """The remote name, the files with their sizes, and rsync's source argument."""
    if not path.exists():
        raise FileNotFoundError(f"dump {path} does not exist")
    name = remote_name or remote_dump_name(path)
    if name not in UPLOAD_NAMES:
        raise ValueError(f"remote_name must be one of {', '.join(UPLOAD_NAMES)}, got {name!r}")
    files = [(f, f.stat().st_size) for f in _files(path)]
    # A trailing slash sends a directory's content into /data/<name>/, not a subdirectory.
    source_arg = f"{path.resolve()}/" if path.is_dir() else str(path.resolve())
    return name, files, source_arg


async def upload_rsync(
    endpoint: RsyncEndpoint,
    private_key_pem: str,
    source: str | os.PathLike[str],
    *,
    remote_name: str | None = None,
    progress: ProgressCallback | None = None,
    max_attempts: int = 5,
    io_timeout: int = IO_TIMEOUT,
) -> RsyncUploadResult:
    """Upload a dump (a file, or a directory-format dump) to `/data/<remote_name>`.

    `remote_name` defaults to `remote_dump_name(source)`. A cut upload is resumed from the
    partial file rsync kept on the server. Raises `SshHostKeyMismatch`, `RemoteRefused`,
    `TransferError`, or `TransferUnavailable` after `max_attempts` runs in a row without
    progress.
    """
    name, files, source_arg = await asyncio.to_thread(_prepare_upload, Path(source), remote_name)
    total = sum(size for _, size in files)
    stop_hashing = threading.Event()
    digest = asyncio.ensure_future(asyncio.to_thread(_upload_digest, Path(source), stop_hashing))
    furthest = {"bytes": 0}

    def on_progress(done: int, _percent: int) -> None:
        furthest["bytes"] = max(furthest["bytes"], min(done, total))
        if progress is not None:
            progress(furthest["bytes"], total)

    try:
        with _ssh_files(private_key_pem, endpoint.known_hosts) as (key, known, home):
            args = rsync_args(
                ssh_command(endpoint, key, known),
                io_timeout,
                "--",
                source_arg,
                endpoint.remote(f"{REMOTE_ROOT}/{name}"),
            )

            async def attempt() -> RsyncRun:
                return await run_rsync(args, _clean_env(home), on_progress)

            runs = await _with_retries(
                "upload", endpoint, max_attempts, attempt, lambda: furthest["bytes"]
            )
        sha256 = await digest
    finally:
        if not digest.done():
            stop_hashing.set()  # the upload failed: its error is the one to raise
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.shield(digest)
    if progress is not None:
        progress(total, total)
    return RsyncUploadResult(
        remote_name=name, bytes=total, files=len(files), sha256=sha256, attempts=runs
    )


def _open_part(final: Path) -> tuple[Path, int, bool]:
    """Refuse an existing destination; open (or resume) and lock `.<name>.part/`.

    Returns the part directory, the locked descriptor, and whether it was created now.
    """
    refuse_existing(final)
    if not final.parent.is_dir():
        raise TransferError(f"destination directory {final.parent} does not exist")
    part = final.with_name(f".{final.name}.part")
    if part.exists() and not part.is_dir():
        raise TransferError(f"{part} exists and is not a directory; move it away")
    created = not part.exists()
    part.mkdir(mode=0o755, exist_ok=True)
    lock = os.open(part, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(lock)
        raise TransferError(f"another download to {final} is in progress") from None
    return part, lock, created


def _bind_part(final: Path, part: Path, binding: DownloadBinding, dump_name: str) -> None:
    """Keep a part set only if its recorded origin is this request's set; empty it otherwise
    (rsync without --delete keeps what it finds: another request's files would be published
    with the new ones), then record the origin before rsync writes a byte."""
    origin = PartOrigin(
        request_id=str(binding.request_id),
        source_sha256=source_digest(_set_source(dump_name)),
        size=None,
        validator="rsync",  # rsync compares each file with the server's itself
    )
    if read_origin(final) == origin:
        return
    for child in list(part.iterdir()):
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()
    write_origin(final, origin)


async def download_rsync(
    endpoint: RsyncEndpoint,
    private_key_pem: str,
    destination: str | os.PathLike[str],
    *,
    dump_name: str,
    progress: ProgressCallback | None = None,
    max_attempts: int = 5,
    io_timeout: int = IO_TIMEOUT,
    binding: DownloadBinding | None = None,
) -> DownloadedSet:
    """Download `/data/<dump_name>`, `filestore/`, `upgrade-report.html` and `upgrade.log`
    into the new directory `destination`, with `SHA256SUMS`, published atomically.

    `destination` must not exist (`DestinationExists`); its parent must. Received under
    `.<name>.part/` beside it, kept for a resume when a run fails. Raises as `upload_rsync`;
    `RemoteRefused` when the platform has no `dump_name`.
    """
    final = Path(destination)
    part, lock, created = await asyncio.to_thread(_open_part, final)
    try:
        if binding is not None:
            await asyncio.to_thread(_bind_part, final, part, binding, dump_name)
        sources = [
            endpoint.remote(f"{REMOTE_ROOT}/{name}")
            for name in (dump_name, FILESTORE_NAME, REPORT_NAME, LOG_NAME)
        ]
        last = {"bytes": 0}

        def on_progress(done: int, percent: int) -> None:
            last["bytes"] = max(last["bytes"], done)
            total = max(done, done * 100 // percent) if percent > 0 else None
            if progress is not None:
                progress(last["bytes"], total)

        try:
            with _ssh_files(private_key_pem, endpoint.known_hosts) as (key, known, home):
                args = rsync_args(
                    ssh_command(endpoint, key, known),
                    io_timeout,
                    "--ignore-missing-args",
                    "--",
                    *sources,
                    f"{part}/",
                )

                async def attempt() -> RsyncRun:
                    return await run_rsync(args, _clean_env(home), on_progress)

                runs = await _with_retries(
                    "download", endpoint, max_attempts, attempt, lambda: _tree_bytes(part)
                )
        except TransferError as exc:
            if not exc.transient and created and not any(part.iterdir()):
                os.rmdir(part)  # nothing came: leave nothing behind
                clear_origin(final)
            raise
        if not (part / dump_name).exists():
            raise RemoteRefused(f"download: the platform offers no {REMOTE_ROOT}/{dump_name}")
        published = await asyncio.to_thread(_publish_set, part, final, dump_name, runs, binding)
    finally:
        os.close(lock)
    if progress is not None:
        progress(published.bytes, published.bytes)
    return published


def _publish_set(
    part: Path, final: Path, dump_name: str, runs: int, binding: DownloadBinding | None
) -> DownloadedSet:
    """Write `SHA256SUMS`, fsync every file and directory, rename `part` to `final`; bound to
    a request, its receipt first (so that an attempt after a crash recognises the set)."""
    for leftover in sorted(part.rglob(PARTIAL_DIR), reverse=True):
        shutil.rmtree(leftover)  # the run succeeded: a partial file left here is stale
    for path in part.rglob("*"):
        if path.is_symlink() or not (path.is_file() or path.is_dir()):
            raise TransferError(f"download: {path.relative_to(part)} is not a regular file")
    sums = sha256sums_text(part, fsync=True)
    sums_path = part / SHA256SUMS
    with open(sums_path, "w", encoding="utf-8") as out:
        out.write(sums)
        out.flush()
        os.fsync(out.fileno())
    for directory in sorted((p for p in part.rglob("*") if p.is_dir()), reverse=True):
        fsync_directory(directory)
    fsync_directory(part)
    listed = [p for p in _files(part) if p != sums_path]
    total = sum(p.stat().st_size for p in listed)
    sums_digest = hashlib.sha256(sums.encode()).hexdigest()
    if binding is not None:
        receipt = Receipt(
            str(binding.request_id), source_digest(_set_source(dump_name)), total, sums_digest, runs
        )
        write_receipt(final, receipt)
    rename_noreplace(part, final)
    clear_origin(final)
    fsync_directory(final.parent)
    log.info("download: %d files (%d bytes) published in %s", len(listed), total, final)
    return _downloaded_set(final, len(listed), total, dump_name, sums_digest, runs)


def _set_source(dump_name: str) -> str:
    """What a set's receipt says was downloaded (its dump's name under the request's /data/)."""
    return f"rsync:{REMOTE_ROOT}/{dump_name}"


def _downloaded_set(
    final: Path, files: int, total: int, dump_name: str, sums_digest: str, runs: int
) -> DownloadedSet:
    def present(name: str) -> Path | None:
        return final / name if (final / name).exists() else None

    return DownloadedSet(
        path=final,
        files=files,
        bytes=total,
        dump_path=final / dump_name,
        report_path=present(REPORT_NAME),
        log_path=present(LOG_NAME),
        sha256sums=sums_digest,
        attempts=runs,
    )


def verified_set(directory: Path) -> tuple[int, str, int] | None:
    """(bytes, sha256 of SHA256SUMS, files) of a published set whose every file matches its
    SHA256SUMS and nothing else is there; None otherwise. Blocking: hashes every file."""
    try:
        text = (directory / SHA256SUMS).read_text(encoding="utf-8")
    except OSError:
        return None
    listed: dict[str, str] = {}
    for line in text.splitlines():
        digest, sep, name = line.partition("  ")
        if not sep or line.startswith("\\"):
            return None  # escaped names: not ours to judge, never taken as complete
        listed[name] = digest
    present = {p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file()}
    if present - {SHA256SUMS} != set(listed):
        return None
    total = 0
    for name, digest in listed.items():
        path = directory / name
        if file_sha256(path) != digest:
            return None
        total += path.stat().st_size
    return total, hashlib.sha256(text.encode()).hexdigest(), len(listed)


def published_set(
    destination: str | os.PathLike[str], binding: DownloadBinding, dump_name: str | None = None
) -> DownloadedSet | None:
    """The set this request already published at `destination` (a crash between the rename
    and the result), or None: its receipt names the request, every file matches SHA256SUMS,
    and SHA256SUMS is the one the receipt records. Blocking: hashes every file."""
    final = Path(destination)
    receipt = read_receipt(final)
    if receipt is None or receipt.request_id != str(binding.request_id) or not final.is_dir():
        return None
    checked = verified_set(final)
    if checked is None or checked[1] != receipt.sha256:
        return None
    total, digest, files = checked
    if dump_name is None:
        others = {FILESTORE_NAME, REPORT_NAME, LOG_NAME, SHA256SUMS}
        dumps = [entry.name for entry in final.iterdir() if entry.name not in others]
        if len(dumps) != 1:
            return None
        dump_name = dumps[0]
    if receipt.source_sha256 != source_digest(_set_source(dump_name)):
        return None
    return _downloaded_set(final, files, total, dump_name, digest, receipt.attempts)
