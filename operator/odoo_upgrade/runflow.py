"""`odoo-upgrade run`: the whole flow outside Kubernetes, one named step after the other.

[check → dump] → create → upload → process → wait → download → [restore], in the order
`request.steps.next_step` gives (the operator follows the same; the bracketed steps come with
`--database` / `--restore-name`, in `odoo_upgrade.run_database`), through the `Platform`
protocol of either platform API (`--api`): database-v1 moves the dump over HTTPS or SFTP and
brings one upgraded file back; upgrade-request moves it by rsync inside a transfer window and
brings a directory back. The state file (`odoo_upgrade.runstate`) is written after each step
and before the next one, so a rerun after a crash or Ctrl-C continues the same request from
where it stopped and never opens a second one.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from odoo_upgrade.database import forget_dump_receipt
from odoo_upgrade.platform.apis import open_platform
from odoo_upgrade.platform.errors import (
    PlatformError,
    PlatformFailure,
    platform_surely_did_not_act,
)
from odoo_upgrade.platform.upgrade_request_platform import UpgradeRequestPlatform
from odoo_upgrade.platform.v1 import DatabaseV1
from odoo_upgrade.progress import TransferProgress
from odoo_upgrade.redact import register_secret
from odoo_upgrade.request import secret_keys
from odoo_upgrade.request.platform import (
    Platform,
    PlatformApi,
    RequestOrder,
    RequestRef,
    env_var_problem,
)
from odoo_upgrade.request.sftp_grant import grant_sftp_access, host_key_check
from odoo_upgrade.request.ssh_keys import SshKeyPair, generate_ssh_keypair
from odoo_upgrade.request.states import StateClass
from odoo_upgrade.request.steps import Progress, next_step
from odoo_upgrade.request.steps import Step as FlowStep
from odoo_upgrade.request.transport import (
    Transport,
    choose_transport,
    download_transport,
    transport_fits,
    transports_of,
)
from odoo_upgrade.request.upgraded import (
    SHA256SUMS,
    upgraded_parts,
    upgraded_sftp_name,
    upgraded_url,
)
from odoo_upgrade.run_database import (
    DatabaseOptions,
    dump_source,
    dump_token,
    preflight,
    restore_token,
    restore_upgraded,
)
from odoo_upgrade.runstate import (
    CreateAttempt,
    DumpRecord,
    RunState,
    load_attempt,
    load_dump_record,
    load_state,
    save_attempt,
    save_dump_record,
    save_state,
    undo_attempt,
)
from odoo_upgrade.runstate import Step as Reached
from odoo_upgrade.transfer import (
    DestinationExists,
    DownloadBinding,
    HostKeyCheck,
    TransferResult,
    download_https,
    download_sftp,
    published_download,
    upload_https,
    upload_sftp,
)
from odoo_upgrade.transfer.file_digest import file_sha256
from odoo_upgrade.transfer.rsync import verified_set
from odoo_upgrade.transfer.rsync_window import download_through_window, upload_through_window

log = logging.getLogger("odoo_upgrade.cli")

T = TypeVar("T")
Say = Callable[[str], None]


class RunRefused(Exception):
    """The arguments cannot be honoured as given (usage error: exit code 2)."""


class UpgradeInvalid(Exception):
    """The platform ended the request in a failure state: `invalid` (database-v1), `failed`
    or `cancelled` (upgrade-request). Exit code 3."""

    def __init__(
        self, request_id: int, customer_message: str | None, state: str = "invalid"
    ) -> None:
        self.request_id = request_id
        self.customer_message = customer_message
        self.state = state
        message = customer_message or "(no message from the platform)"
        super().__init__(f"request {request_id} ended {state}: {message}")


@dataclass(frozen=True)
class RunOptions:
    """The arguments of `odoo-upgrade run`, checked by click."""

    platform_url: str
    dump: Path
    target: str
    aim: str
    email: str | None
    contract: str | None
    filename: str
    timezone: str | None
    transport: str  # auto | https | sftp (database-v1), auto | rsync (upgrade-request)
    sftp_threshold: int
    output: Path
    format: str  # archive | sql
    poll_interval: float
    state_file: Path
    show_progress: bool
    databases: DatabaseOptions | None = None  # --database / --restore-name
    api: str = PlatformApi.DATABASE_V1
    env_vars: tuple[str, ...] = ()  # upgrade-request `env_vars`


@dataclass(frozen=True)
class RunSummary:
    """What `run` reports at the end; never the key or a key-bearing URL."""

    request_id: int
    target: str
    platform_state: str
    transport: str
    bytes_uploaded: int | None
    upload_sha256: str | None
    bytes_downloaded: int | None
    sha256: str | None
    output: str
    elapsed_seconds: float
    database: dict[str, Any] | None = None  # what was dumped and restored, with --database
    api: str = PlatformApi.DATABASE_V1
    files: int | None = None  # upgrade-request: files downloaded (SHA256SUMS aside)
    download_transport: str | None = None  # how the upgraded dump came back

    def to_json(self) -> dict[str, Any]:
        extra: dict[str, Any] = {"database": self.database} if self.database is not None else {}
        if self.files is not None:
            extra["files"] = self.files
        if self.download_transport is not None:
            extra["download_transport"] = self.download_transport
        return {
            **extra,
            "request_id": self.request_id,
            "target": self.target,
            "platform_state": self.platform_state,
            "transport": self.transport,
            "bytes_uploaded": self.bytes_uploaded,
            "upload_sha256": self.upload_sha256,
            "bytes_downloaded": self.bytes_downloaded,
            "sha256": self.sha256,
            "output": self.output,
            "sha256_file": checksum_file(Path(self.output), self.api).as_posix(),
            "elapsed_seconds": round(self.elapsed_seconds, 1),
            "api": self.api,
        }


def sha256_sidecar(path: Path) -> Path:
    """`<file>.sha256` beside a downloaded file (written by the download transfer)."""
    return path.with_name(path.name + ".sha256")


def checksum_file(output: Path, api: str) -> Path:
    """Where the download's checksums are: `<file>.sha256`, or `<directory>/SHA256SUMS`."""
    return output / SHA256SUMS if api == PlatformApi.UPGRADE_REQUEST else sha256_sidecar(output)


def default_output(dump: Path, fmt: str, api: str = PlatformApi.DATABASE_V1) -> Path:
    """`upgraded_<name>` next to the dump (`upgraded_<stem>.sql` for the SQL format); with
    upgrade-request the directory `upgraded_<stem>`."""
    if api == PlatformApi.UPGRADE_REQUEST:
        return dump.with_name(f"upgraded_{dump.stem}")
    name = dump.name if fmt == "archive" else f"{dump.stem}.sql"
    return dump.with_name(f"upgraded_{name}")


def default_state_file(dump: Path) -> Path:
    return dump.with_name(dump.name + ".odoo-upgrade.json")


async def run_upgrade(options: RunOptions, say: Say) -> RunSummary:
    """Drive one request from `create` to the downloaded upgraded dump, resuming if possible."""
    with exclusive_run(options.dump, options.state_file):
        return await _run_locked(options, say)


def run_lock_path(state_file: Path) -> Path:
    """The lock file of the runs of one state file; it exists only while a run holds it."""
    return state_file.with_name(f".{state_file.name}.lock")


@contextlib.contextmanager
def exclusive_run(dump: Path, state_file: Path) -> Iterator[None]:
    """One `run` per state file and per dump at a time: two at once would both see no state
    file and create, or both continue one request (and race at its download and restore).

    Advisory locks the kernel drops when the process dies: on a lock file beside the state
    file (with --database the dump does not exist yet when the run starts), removed at the
    end, and on the dump itself when it exists (two state files, one dump).
    """
    with contextlib.ExitStack() as locks:
        lock_path = run_lock_path(state_file)
        lock = _locked_file(lock_path, state_file, dump)
        if lock is not None:
            locks.callback(os.close, lock)
            locks.callback(lambda: lock_path.unlink(missing_ok=True))  # still ours: locked
        try:
            fd = os.open(dump, os.O_RDONLY)  # a file, or a directory-format dump
        except OSError:
            fd = None  # no dump yet: --database makes it, else check_first_run reports it
        if fd is not None:
            locks.callback(os.close, fd)
            _lock_or_refuse(fd, dump)
        yield


def _locked_file(path: Path, state_file: Path, dump: Path) -> int | None:
    """Create (or open) and lock `path`; again if the run before removed it meanwhile (a lock
    on a removed file would be no lock for the next run). None when its directory does not
    exist: no state file can be there either, and the checks after say what is missing."""
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise RunRefused(
                f"--state-file {state_file}: cannot create its lock file {path.name} beside "
                f"it: {exc.strerror}"
            ) from None
        try:
            _lock_or_refuse(fd, dump)
            with contextlib.suppress(FileNotFoundError):
                if os.stat(path).st_ino == os.fstat(fd).st_ino:
                    return fd
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)


def _lock_or_refuse(fd: int, dump: Path) -> None:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise RunRefused(
            f"another odoo-upgrade run is working on {dump}; wait for it to finish"
        ) from None


async def _run_locked(options: RunOptions, say: Say) -> RunSummary:
    started = time.monotonic()
    check_options(options)
    refuse_after_unanswered_create(options)
    state = load_state(options.state_file)
    dumped = load_dump_record(options.state_file) if state is None else None
    if state is not None:
        check_state_matches(state, options)
        register_secret(state.key, state.ssh_private_key)
        say(f"continuing request {state.request_id} (step reached: {state.step})")
    else:
        if dumped is not None:
            check_dump_matches(dumped, options)
            say(f"continuing after the dump of database {dumped.database!r} (no request yet)")
        check_first_run(options)
    checked = False

    client = open_platform(options.api, options.platform_url)
    try:
        if state is not None and not state.step.reached(Reached.PROCESSING):
            await skip_steps_the_platform_already_did(client, state, options, say)
        steps = {
            FlowStep.UPLOAD: upload_dump,
            FlowStep.PROCESS: start_processing,
            FlowStep.WAIT: wait_until_processed,
            FlowStep.DOWNLOAD: download_upgraded_dump,
            FlowStep.RESTORE: restore_upgraded_dump,
        }
        while (step := next_step(run_progress(state, dumped, options, checked))) is not (
            FlowStep.FINISH
        ):
            if step is FlowStep.CHECK:
                await check_databases(options, say)
                checked = True
            elif step is FlowStep.DUMP:
                dumped = await dump_database_first(options, say)
            elif step is FlowStep.CREATE:
                state = await create_request(client, options, say, dumped)
            else:
                assert state is not None  # every later step comes after `create`
                await steps[step](client, state, options, say)
    finally:
        await client.aclose()
    assert state is not None

    return RunSummary(
        request_id=state.request_id,
        target=state.target,
        platform_state=state.platform_state or "done",
        transport=state.transport,
        bytes_uploaded=state.upload_bytes,
        upload_sha256=state.upload_sha256,
        bytes_downloaded=state.download_bytes,
        sha256=state.download_sha256,
        output=state.output or str(options.output),
        elapsed_seconds=time.monotonic() - started,
        database=database_summary(state) if options.databases is not None else None,
        api=state.api,
        files=state.download_files,
        download_transport=state.download_transport,
    )


def database_summary(state: RunState) -> dict[str, Any]:
    return {
        "dumped": state.database,
        "dump_sha256": state.dump_sha256,
        "server_version": state.dump_server_version,
        "restored": state.restore_name,
        "base_version": state.restore_base_version,
        "filestore_files": state.restore_filestore_files,
    }


def check_options(options: RunOptions) -> None:
    """Options of one platform API are refused with the other, before anything is read."""
    if not transport_fits(options.api, options.transport):
        raise RunRefused(
            f"--transport {options.transport} is not a transport of --api {options.api} "
            f"(expected {' or '.join(transports_of(options.api))})"
        )
    if options.env_vars and options.api != PlatformApi.UPGRADE_REQUEST:
        raise RunRefused("--env is sent only with --api upgrade-request (database-v1 has none)")
    for entry in options.env_vars:
        problem = env_var_problem(entry)
        if problem:
            raise RunRefused(f"--env: {problem}")
    if options.api == PlatformApi.UPGRADE_REQUEST and options.format != "archive":
        raise RunRefused(
            f"--format {options.format} is a database-v1 download; with --api upgrade-request "
            "--output is a directory receiving the upgraded set"
        )


def check_first_run(options: RunOptions) -> None:
    """Refuse before `create` whatever would fail later: a request costs the customer.

    With `--database` the dump is made first (the pre-flight step checks the database)."""
    if not options.contract:
        raise RunRefused("missing contract: pass --contract-file FILE or set ODOO_UPGRADE_CONTRACT")
    if options.api == PlatformApi.DATABASE_V1 and not options.email:
        raise RunRefused("missing --email: the platform requires an email address")
    dumping = options.databases is not None and options.databases.source is not None
    if not dumping and options.api == PlatformApi.DATABASE_V1 and not options.dump.is_file():
        raise RunRefused(f"--dump {options.dump}: not a readable file")
    if not dumping and not options.dump.is_file() and not (options.dump / "toc.dat").is_file():
        raise RunRefused(
            f"--dump {options.dump}: not a readable file nor a directory-format dump (toc.dat)"
        )
    # With --database, an existing --dump is refused by the pre-flight step (before any dump or
    # `create`), unless it is this run's own dump published before a kill (run_database).
    if options.output.exists() or options.output.is_symlink():
        raise RunRefused(
            f"--output {options.output} exists already; it is never overwritten "
            "(move it away or pass another --output)"
        )


def check_dump_matches(record: DumpRecord, options: RunOptions) -> None:
    """A recorded dump continues only the run it was made for, and only unchanged."""
    source = options.databases.source if options.databases is not None else None
    mismatches = []
    if record.database != source:
        mismatches.append(f"database {record.database!r} (given {source!r})")
    if record.dump != str(options.dump.resolve()):
        mismatches.append(f"dump {record.dump!r} (given {str(options.dump.resolve())!r})")
    if record.target != options.target:
        mismatches.append(f"target {record.target!r} (given {options.target!r})")
    if mismatches:
        raise RunRefused(
            f"state file {options.state_file} records a dump for "
            + ", ".join(mismatches)
            + "; pass the same arguments to continue, or another --state-file"
        )
    size = options.dump.stat().st_size if options.dump.is_file() else None
    if size != record.dump_size:
        raise RunRefused(
            f"--dump {options.dump} changed since it was dumped ({record.dump_size} bytes then, "
            f"{size} now); refusing to upload a different file"
        )


def check_state_matches(state: RunState, options: RunOptions) -> None:
    """A state file continues only the request it was made for."""
    mismatches = []
    if state.api != options.api:
        mismatches.append(f"api {state.api!r} (given {options.api!r})")
    if state.dump != str(options.dump.resolve()):
        mismatches.append(f"dump {state.dump!r} (given {str(options.dump.resolve())!r})")
    if state.target != options.target:
        mismatches.append(f"target {state.target!r} (given {options.target!r})")
    if state.platform_url.rstrip("/") != options.platform_url.rstrip("/"):
        mismatches.append(f"platform {state.platform_url!r} (given {options.platform_url!r})")
    if mismatches:
        raise RunRefused(
            f"state file {options.state_file} belongs to request {state.request_id} for "
            + ", ".join(mismatches)
            + "; pass the same arguments to continue it, or another --state-file for a new request"
        )
    if not state.step.reached(Reached.UPLOADED):
        size = dump_size(options.dump) if options.dump.exists() else None
        if size != state.dump_size:
            raise RunRefused(
                f"--dump {options.dump} changed since request {state.request_id} was created "
                f"({state.dump_size} bytes then, {size} now); refusing to upload a different file"
            )


def run_progress(
    state: RunState | None, dumped: DumpRecord | None, options: RunOptions, checked: bool
) -> Progress:
    """What the state file (and this run, for the pre-flight) records as done."""
    base = progress_of(state) if state is not None else Progress()
    databases = options.databases
    if databases is None:
        return base
    return replace(
        base,
        check_wanted=databases.source is not None or databases.restore is not None,
        checked=checked,
        dump_wanted=databases.source is not None,
        dumped=dumped is not None or state is not None,
        restore_wanted=databases.restore is not None,
        restored=state is not None and state.step.reached(Reached.RESTORED),
    )


def dump_size(dump: Path) -> int:
    """Bytes of a dump file, or of every file of a directory-format dump."""
    if not dump.is_dir():
        return dump.stat().st_size
    return sum(p.stat().st_size for p in dump.rglob("*") if p.is_file())


def ref_of(state: RunState) -> RequestRef:
    return RequestRef(state.request_id, state.key, state.assigned_host)


def as_v1(platform: Platform) -> DatabaseV1:
    if not isinstance(platform, DatabaseV1):
        raise TypeError("HTTPS and SFTP transfers exist on the database/v1 API only")
    return platform


def as_upgrade_request(platform: Platform) -> UpgradeRequestPlatform:
    if not isinstance(platform, UpgradeRequestPlatform):
        raise TypeError("rsync transfers exist on the upgrade/request API only")
    return platform


def progress_of(state: RunState) -> Progress:
    """What the state file records as done (the only memory of a run)."""
    return Progress(
        created=True,
        uploaded=state.step.reached(Reached.UPLOADED),
        processed=state.step.reached(Reached.PROCESSING),
        upgraded=state.step.reached(Reached.DONE),
        downloaded=state.step.reached(Reached.DOWNLOADED),
    )


async def check_databases(options: RunOptions, say: Say) -> None:
    """Pre-flight (with --database / --restore-name): before any dump or `create`."""
    assert options.databases is not None
    databases = options.databases
    token = dump_token(options.state_file, databases)
    await asyncio.to_thread(preflight, databases, options.dump, token, say)


async def dump_database_first(options: RunOptions, say: Say) -> DumpRecord:
    """Dump --database to --dump, then record it: a rerun uploads this dump, not a new one."""
    assert options.databases is not None and options.databases.source is not None
    databases = options.databases
    say(f"dumping database {databases.source!r} to {options.dump}")
    progress = TransferProgress("dump", enabled=options.show_progress)
    token = dump_token(options.state_file, databases)
    result = await run_in_daemon_thread(
        lambda: dump_source(databases, options.dump, token, progress)
    )
    progress.finish()
    record = DumpRecord(
        database=result.database,
        dump=str(options.dump.resolve()),
        dump_size=result.bytes,
        dump_sha256=result.sha256,
        server_version=result.server_version,
        target=options.target,
        platform_url=options.platform_url,
    )
    save_dump_record(options.state_file, record)
    forget_dump_receipt(options.dump)  # the record names the dump from now on
    say(f"dumped {result.bytes} bytes (PostgreSQL {result.server_version}), sha256 {result.sha256}")
    return record


async def restore_upgraded_dump(
    platform: Platform, state: RunState, options: RunOptions, say: Say
) -> None:
    """Restore the upgraded dump into --restore-name (verified), then the filestore."""
    assert options.databases is not None and options.databases.restore is not None
    databases = options.databases
    downloaded = Path(state.output) if state.output else options.output
    # upgrade-request: the directory-format dump inside the set, its filestore/ beside it
    upgraded = upgraded_parts(downloaded, state.download_dump)
    token = restore_token(state.platform_url, state.request_id)
    say(f"restoring {upgraded.dump} into the new database {databases.restore!r}")
    restored, filestore = await run_in_daemon_thread(
        lambda: restore_upgraded(databases, upgraded, state.target, token)
    )
    state.restore_name = restored.database
    state.restore_base_version = restored.base_version
    state.restore_filestore_files = filestore.files if filestore is not None else None
    state.step = Reached.RESTORED
    save_state(options.state_file, state)
    files = f", filestore {filestore.path} ({filestore.files} files)" if filestore else ""
    say(f"restored {restored.database!r}: base module at {restored.base_version}{files}")


def refuse_after_unanswered_create(options: RunOptions) -> None:
    """A run stopped after sending `create` and before saving its answer: the platform may
    have opened (and billed) a request this run cannot know. Never a second one unasked."""
    attempt = load_attempt(options.state_file)
    if attempt is None:
        return
    raise RunRefused(
        f"a run sent create to {attempt.platform_url} (target {attempt.target}) at "
        f"{attempt.attempted_at} and stopped before its answer was saved: the platform may "
        f"hold a request for this dump. Check the email the platform sent; if no request "
        f"was opened, delete the state file {options.state_file} and run again"
    )


async def create_request(
    platform: Platform, options: RunOptions, say: Say, dumped: DumpRecord | None = None
) -> RunState:
    """Step 1: `create`, then write the state file before anything else happens."""
    assert options.contract is not None  # check_first_run
    size = dump_size(options.dump)
    order = RequestOrder(
        contract=options.contract,
        email=options.email or "",
        target=options.target,
        aim=options.aim,
        filename=options.filename,
        timezone=options.timezone,
        env_vars=options.env_vars,
    )
    attempt = CreateAttempt(
        platform_url=options.platform_url,
        target=options.target,
        dump=str(options.dump.resolve()),
        attempted_at=datetime.now(UTC).isoformat(timespec="seconds"),
        before=dumped.to_json() if dumped is not None else None,
    )
    save_attempt(options.state_file, attempt)
    try:
        created = await platform.create(order)
    except PlatformError as error:
        if isinstance(error, PlatformFailure) or platform_surely_did_not_act(error):
            undo_attempt(options.state_file, attempt)  # the platform made no request
        raise
    # upgrade-request: the key pair whose public half went into `create`, kept for rsync.
    values = created.secret_values
    state = RunState(
        request_id=created.ref.request_id,
        key=created.ref.secret,
        platform_url=options.platform_url,
        dump=str(options.dump.resolve()),
        dump_size=size,
        target=options.target,
        aim=options.aim,
        filename=options.filename,
        transport=choose_transport(
            options.transport, size, options.sftp_threshold, api=options.api
        ).value,
        platform_state=created.state,
        output=str(options.output.resolve()),
        database=dumped.database if dumped is not None else None,
        dump_sha256=dumped.dump_sha256 if dumped is not None else None,
        dump_server_version=dumped.server_version if dumped is not None else None,
        api=options.api,
        assigned_host=created.ref.host,
        ssh_private_key=values.get(secret_keys.SSH_PRIVATE_KEY),
        ssh_public_key=values.get(secret_keys.SSH_PUBLIC_KEY),
    )
    register_secret(state.key, state.ssh_private_key)
    save_state(options.state_file, state)
    say(
        f"created request {state.request_id} (target {options.target}, aim {options.aim}); "
        f"state file {options.state_file}"
    )
    if created.info:
        say(f"the platform says: {created.info}")
    return state


async def skip_steps_the_platform_already_did(
    platform: Platform, state: RunState, options: RunOptions, say: Say
) -> None:
    """On a rerun, trust the platform: past its first state, the dump is in and processing
    started. Covers a crash after `process` succeeded but before the state file recorded it.
    """
    current = await platform.status(ref_of(state))
    if not platform.states.needs_process(current.state):
        state.platform_state = current.state
        state.step = Reached.PROCESSING
        save_state(options.state_file, state)
        say(f"request {state.request_id} is already {current.state} on the platform")


async def upload_dump(platform: Platform, state: RunState, options: RunOptions, say: Say) -> None:
    """Step 2: send the dump (HTTPS body, SFTP with append-resume, or rsync), record its
    sha256 (of a directory-format dump: of its SHA256SUMS)."""
    if options.transport != "auto" and options.transport != state.transport:
        state.transport = options.transport
        save_state(options.state_file, state)
    say(f"uploading {options.dump} ({state.dump_size} bytes) over {state.transport}")
    progress = TransferProgress("upload", enabled=options.show_progress)
    result: TransferResult
    if state.api == PlatformApi.UPGRADE_REQUEST:
        sent = await upload_through_window(
            as_upgrade_request(platform).client(state.assigned_host),
            state.key,
            rsync_key(state),
            options.dump,
            progress=progress,
        )
        result = TransferResult(bytes=sent.bytes, sha256=sent.sha256, attempts=sent.attempts)
    elif state.transport == "sftp":
        result = await upload_over_sftp(as_v1(platform), state, options, progress)
    else:
        result = await upload_https(
            options.platform_url, state.request_id, state.key, options.dump, progress=progress
        )
    progress.finish()
    state.upload_bytes = result.bytes
    state.upload_sha256 = result.sha256
    state.step = Reached.UPLOADED
    save_state(options.state_file, state)
    say(f"uploaded {result.bytes} bytes, sha256 {result.sha256}")


def rsync_key(state: RunState) -> str:
    """The private key whose public half went into `create` (upgrade-request)."""
    if not state.ssh_private_key:
        raise RunRefused(
            f"state file {state.dump}: request {state.request_id} has no SSH key to transfer "
            "with; the request cannot be continued by rsync"
        )
    return state.ssh_private_key


async def upload_over_sftp(
    client: DatabaseV1, state: RunState, options: RunOptions, progress: TransferProgress
) -> TransferResult:
    """SFTP upload with a key pair kept in the state file, so a rerun resumes as the same user."""
    keypair = state_keypair(state, options)
    grant = await grant_sftp_access(client, state.request_id, state.key, keypair)
    check = recorded_host_key_check(state, options)
    return await run_in_daemon_thread(
        lambda: upload_sftp(
            grant.access, keypair.private_pem, options.dump, host_key=check, progress=progress
        )
    )


def state_keypair(state: RunState, options: RunOptions) -> SshKeyPair:
    """The SFTP key pair of the state file (made and saved on first need)."""
    if state.ssh_private_key is None or state.ssh_public_key is None:
        pair = generate_ssh_keypair()
        state.ssh_private_key, state.ssh_public_key = pair.private_pem, pair.public_line
        register_secret(state.ssh_private_key)
        save_state(options.state_file, state)
    return SshKeyPair(state.ssh_private_key, state.ssh_public_key)


def recorded_host_key_check(state: RunState, options: RunOptions) -> HostKeyCheck:
    """The host key recorded in the state file; else trust on first use and record it."""

    def record_host_key(line: str) -> None:
        # Trust on first use, then pinned for every later attempt and rerun.
        state.sftp_host_key = line
        save_state(options.state_file, state)

    return host_key_check(None, state.sftp_host_key, record_host_key)


async def start_processing(
    platform: Platform, state: RunState, options: RunOptions, say: Say
) -> None:
    """Step 3: `process`, recorded before polling starts."""
    facts = await platform.process(ref_of(state))
    state.step = Reached.PROCESSING
    save_state(options.state_file, state)
    say(f"request {state.request_id} is being processed")
    if facts.get("pgVersionCompatible") is False:
        say(
            "warning: the platform says the upgraded dump cannot be restored on the PostgreSQL "
            "version of the uploaded dump: restore it on a newer server"
        )


async def wait_until_processed(
    platform: Platform, state: RunState, options: RunOptions, say: Say
) -> None:
    """Step 4: poll `status` until a final state; a failure state raises `UpgradeInvalid`."""
    last_state: str | None = None
    while True:
        current = await platform.status(ref_of(state))
        if current.state != last_state:
            last_state = current.state
            estimate = current.public.get("estimatedTime")
            details = f", estimated time {estimate}" if estimate else ""
            say(f"platform state: {current.state}{details}")
            if not platform.states.is_known(current.state):
                log.warning(
                    "unknown platform state %r: treated as still in progress", current.state
                )
        if platform.states.is_final(current.state):
            break
        await asyncio.sleep(options.poll_interval)
    state.platform_state = current.state
    if current.state_class is not StateClass.SUCCEEDED:
        save_state(options.state_file, state)
        raise UpgradeInvalid(state.request_id, current.message, current.state)
    state.step = Reached.DONE
    save_state(options.state_file, state)


async def download_upgraded_dump(
    platform: Platform, state: RunState, options: RunOptions, say: Say
) -> None:
    """Step 5: download with resume to a temp file (a temporary directory), verify, rename;
    `<output>.sha256` beside it (`SHA256SUMS` inside it). The archive comes back over SFTP
    when the dump went so; only this request's bytes are resumed (`DownloadBinding`)."""
    if state.api == PlatformApi.UPGRADE_REQUEST:
        await download_upgraded_set(as_upgrade_request(platform), state, options, say)
        return
    output = Path(state.output) if state.output else options.output
    binding = DownloadBinding(str(state.request_id))
    transport = download_transport(state.transport, options.format, state.transport)
    if output.exists():
        published = await asyncio.to_thread(published_download, output, binding)
        digest = published.sha256 if published else None
        if digest is None:
            digest = await asyncio.to_thread(matching_sidecar_digest, output)
        if digest is None:
            raise DestinationExists(
                f"{output} exists already and is not the download of request "
                f"{state.request_id}; it is never overwritten (move it away and rerun)"
            )
        # A crash between the rename and the state file update: the download is complete.
        record_download(state, options, output.stat().st_size, digest, transport=transport)
        return
    say(f"downloading the upgraded dump ({options.format}) over {transport} to {output}")
    progress = TransferProgress("download", enabled=options.show_progress)
    if transport is Transport.SFTP:
        result = await download_over_sftp(
            as_v1(platform), state, options, output, binding, progress
        )
    else:
        request = await as_v1(platform).request(ref_of(state))
        url = upgraded_url(request, options.format)
        if not url:
            raise UpgradeInvalid(
                state.request_id, f"the platform offers no {options.format} download"
            )
        result = await download_https(url, output, progress=progress, binding=binding)
    progress.finish()
    record_download(state, options, result.bytes, result.sha256, transport=transport)


async def download_over_sftp(
    client: DatabaseV1,
    state: RunState,
    options: RunOptions,
    output: Path,
    binding: DownloadBinding,
    progress: TransferProgress,
) -> TransferResult:
    """`get upgraded_<filename>`: SFTP access asked again now that the request is done, with
    the state file's key pair, the host key pinned as recorded at the upload."""
    keypair = state_keypair(state, options)
    grant = await grant_sftp_access(client, state.request_id, state.key, keypair)
    check = recorded_host_key_check(state, options)
    return await run_in_daemon_thread(
        lambda: download_sftp(
            grant.access,
            keypair.private_pem,
            upgraded_sftp_name(grant.access.shared_file),
            output,
            host_key=check,
            binding=binding,
            progress=progress,
        )
    )


async def download_upgraded_set(
    platform: UpgradeRequestPlatform, state: RunState, options: RunOptions, say: Say
) -> None:
    """upgrade-request: rsync the upgraded set into the new directory `output`, published
    whole with its SHA256SUMS (a half-received set stays in `.<name>.part/` for a resume)."""
    output = Path(state.output) if state.output else options.output
    if output.exists():
        checked = await asyncio.to_thread(verified_set, output)
        if checked is None:
            raise DestinationExists(
                f"{output} exists already and is not the download of request "
                f"{state.request_id}; it is never overwritten (move it away and rerun)"
            )
        # A crash between the rename and the state file update: the download is complete.
        size, digest, files = checked
        record_download(
            state,
            options,
            size,
            digest,
            files=files,
            dump=state.download_dump,
            transport=Transport.RSYNC,
        )
        return
    say(f"downloading the upgraded set to {output}/")
    progress = TransferProgress("download", enabled=options.show_progress)
    got = await download_through_window(
        platform.client(state.assigned_host),
        state.key,
        rsync_key(state),
        output,
        progress=progress,
    )
    progress.finish()
    dump = got.dump_path.relative_to(got.path).as_posix()
    record_download(
        state,
        options,
        got.bytes,
        got.sha256sums,
        files=got.files,
        dump=dump,
        transport=Transport.RSYNC,
    )


def record_download(
    state: RunState,
    options: RunOptions,
    size: int,
    digest: str,
    *,
    files: int | None = None,
    dump: str | None = None,
    transport: Transport | None = None,
) -> None:
    state.download_transport = transport.value if transport is not None else None
    state.download_bytes = size
    state.download_sha256 = digest
    state.download_files = files
    state.download_dump = dump
    state.step = Reached.DOWNLOADED
    save_state(options.state_file, state)


def matching_sidecar_digest(path: Path) -> str | None:
    """The sha256 of `path` when its `.sha256` sidecar agrees with the content, else None."""
    try:
        recorded = sha256_sidecar(path).read_text(encoding="utf-8").split()[0]
    except (OSError, IndexError):
        return None
    return recorded if file_sha256(path) == recorded else None


async def run_in_daemon_thread(function: Callable[[], T]) -> T:
    """Run blocking work in a daemon thread, so Ctrl-C exits at once instead of joining it.

    `asyncio.to_thread` uses executor threads that the interpreter joins at exit: a Ctrl-C
    during a 10 GiB SFTP upload would then wait for the upload to finish.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(outcome: Callable[[], None]) -> None:
        if not future.done():
            outcome()

    def work() -> None:
        try:
            value = function()
        except BaseException as exc:
            outcome = functools.partial(future.set_exception, exc)
        else:
            outcome = functools.partial(future.set_result, value)
        # After Ctrl-C the loop may be closed already; nobody waits for the outcome then.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(settle, outcome)

    threading.Thread(target=work, name="odoo-upgrade-transfer", daemon=True).start()
    return await future
