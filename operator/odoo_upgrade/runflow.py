"""`odoo-upgrade run`: the whole flow outside Kubernetes, one named step after the other.

[check → dump] → create → upload → process → wait → download → [restore], in the order
`request.steps.next_step` gives (the operator follows the same; the bracketed steps come with
`--database` / `--restore-name`, in `odoo_upgrade.run_database`). The state file
(`odoo_upgrade.runstate`) is written after each step and before the next one, so a rerun after
a crash or Ctrl-C continues the same request from where it stopped and never opens a second
one.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

from odoo_upgrade.platform.client import PlatformClient
from odoo_upgrade.progress import TransferProgress
from odoo_upgrade.redact import register_secret
from odoo_upgrade.request.sftp_grant import grant_sftp_access, host_key_check
from odoo_upgrade.request.ssh_keys import SshKeyPair, generate_ssh_keypair
from odoo_upgrade.request.states import V1_STATES
from odoo_upgrade.request.steps import Progress, next_step
from odoo_upgrade.request.steps import Step as FlowStep
from odoo_upgrade.request.transport import choose_transport
from odoo_upgrade.request.upgraded import upgraded_url
from odoo_upgrade.run_database import (
    DatabaseOptions,
    dump_source,
    preflight,
    restore_token,
    restore_upgraded,
)
from odoo_upgrade.runstate import (
    DumpRecord,
    RunState,
    load_dump_record,
    load_state,
    save_dump_record,
    save_state,
)
from odoo_upgrade.runstate import Step as Reached
from odoo_upgrade.transfer import (
    DestinationExists,
    TransferResult,
    download_https,
    upload_https,
    upload_sftp,
)

log = logging.getLogger("odoo_upgrade.cli")

T = TypeVar("T")
Say = Callable[[str], None]


class RunRefused(Exception):
    """The arguments cannot be honoured as given (usage error: exit code 2)."""


class UpgradeInvalid(Exception):
    """The platform ended the request in `invalid` (exit code 3)."""

    def __init__(self, request_id: int, customer_message: str | None) -> None:
        self.request_id = request_id
        self.customer_message = customer_message
        message = customer_message or "(no message from the platform)"
        super().__init__(f"request {request_id} ended invalid: {message}")


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
    transport: str  # auto | https | sftp
    sftp_threshold: int
    output: Path
    format: str  # archive | sql
    poll_interval: float
    state_file: Path
    show_progress: bool
    databases: DatabaseOptions | None = None  # --database / --restore-name


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

    def to_json(self) -> dict[str, Any]:
        extra = {"database": self.database} if self.database is not None else {}
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
            "sha256_file": sha256_sidecar(Path(self.output)).as_posix(),
            "elapsed_seconds": round(self.elapsed_seconds, 1),
        }


def sha256_sidecar(path: Path) -> Path:
    """`<file>.sha256` beside a downloaded file (written by the download transfer)."""
    return path.with_name(path.name + ".sha256")


def default_output(dump: Path, fmt: str) -> Path:
    """`upgraded_<name>` next to the dump (`upgraded_<stem>.sql` for the SQL format)."""
    name = dump.name if fmt == "archive" else f"{dump.stem}.sql"
    return dump.with_name(f"upgraded_{name}")


def default_state_file(dump: Path) -> Path:
    return dump.with_name(dump.name + ".odoo-upgrade.json")


async def run_upgrade(options: RunOptions, say: Say) -> RunSummary:
    """Drive one request from `create` to the downloaded upgraded dump, resuming if possible."""
    with exclusive_run(options.dump):
        return await _run_locked(options, say)


@contextlib.contextmanager
def exclusive_run(dump: Path) -> Iterator[None]:
    """One `run` per dump at a time: two at once would both see no state file and create.

    An advisory lock on the dump itself; the kernel drops it when the process dies.
    """
    try:
        handle = dump.open("rb")
    except OSError:
        yield  # no dump: check_first_run or the upload reports it
        return
    with handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunRefused(
                f"another odoo-upgrade run is working on {dump}; wait for it to finish"
            ) from None
        yield


async def _run_locked(options: RunOptions, say: Say) -> RunSummary:
    started = time.monotonic()
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
        check_first_run(options, dumped=dumped)
    checked = False

    async with PlatformClient(options.platform_url) as client:
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


def check_first_run(options: RunOptions, *, dumped: DumpRecord | None = None) -> None:
    """Refuse before `create` whatever would fail later: a request costs the customer.

    With `--database` the dump is made first (the pre-flight step checks the database)."""
    if not options.contract:
        raise RunRefused("missing contract: pass --contract-file FILE or set ODOO_UPGRADE_CONTRACT")
    if not options.email:
        raise RunRefused("missing --email: the platform requires an email address")
    dumping = options.databases is not None and options.databases.source is not None
    if not dumping and not options.dump.is_file():
        raise RunRefused(f"--dump {options.dump}: not a readable file")
    if dumping and dumped is None and os.path.lexists(options.dump):
        raise RunRefused(
            f"--dump {options.dump} exists already; with --database the dump is written there "
            "and never over a file (move it away or pass another --dump)"
        )
    if options.output.exists():
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
        size = options.dump.stat().st_size if options.dump.is_file() else None
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
    await asyncio.to_thread(preflight, databases, options.dump, say)


async def dump_database_first(options: RunOptions, say: Say) -> DumpRecord:
    """Dump --database to --dump, then record it: a rerun uploads this dump, not a new one."""
    assert options.databases is not None and options.databases.source is not None
    databases = options.databases
    say(f"dumping database {databases.source!r} to {options.dump}")
    progress = TransferProgress("dump", enabled=options.show_progress)
    result = await run_in_daemon_thread(lambda: dump_source(databases, options.dump, progress))
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
    say(f"dumped {result.bytes} bytes (PostgreSQL {result.server_version}), sha256 {result.sha256}")
    return record


async def restore_upgraded_dump(
    client: PlatformClient, state: RunState, options: RunOptions, say: Say
) -> None:
    """Restore the upgraded dump into --restore-name (verified), then the filestore."""
    assert options.databases is not None and options.databases.restore is not None
    databases = options.databases
    upgraded = Path(state.output) if state.output else options.output
    token = restore_token(state.platform_url, state.request_id)
    say(f"restoring {upgraded} into the new database {databases.restore!r}")
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


async def create_request(
    client: PlatformClient, options: RunOptions, say: Say, dumped: DumpRecord | None = None
) -> RunState:
    """Step 1: `create`, then write the state file before anything else happens."""
    assert options.contract is not None and options.email is not None  # check_first_run
    size = options.dump.stat().st_size
    request = await client.create(
        contract=options.contract,
        email=options.email,
        target=options.target,
        aim=options.aim,
        filename=options.filename,
        timezone=options.timezone,
    )
    state = RunState(
        request_id=request.id,
        key=request.key,
        platform_url=options.platform_url,
        dump=str(options.dump.resolve()),
        dump_size=size,
        target=options.target,
        aim=options.aim,
        filename=options.filename,
        transport=choose_transport(options.transport, size, options.sftp_threshold).value,
        platform_state=request.state,
        output=str(options.output.resolve()),
        database=dumped.database if dumped is not None else None,
        dump_sha256=dumped.dump_sha256 if dumped is not None else None,
        dump_server_version=dumped.server_version if dumped is not None else None,
    )
    save_state(options.state_file, state)
    say(
        f"created request {request.id} (target {options.target}, aim {options.aim}); "
        f"state file {options.state_file}"
    )
    return state


async def skip_steps_the_platform_already_did(
    client: PlatformClient, state: RunState, options: RunOptions, say: Say
) -> None:
    """On a rerun, trust the platform: past `draft`, the dump is in and processing started.

    Covers a crash after `process` succeeded but before the state file recorded it.
    """
    request = await client.status(state.request_id, state.key)
    if not V1_STATES.needs_process(request.state):
        state.platform_state = request.state
        state.step = Reached.PROCESSING
        save_state(options.state_file, state)
        say(f"request {state.request_id} is already {request.state} on the platform")


async def upload_dump(
    client: PlatformClient, state: RunState, options: RunOptions, say: Say
) -> None:
    """Step 2: send the dump (HTTPS body, or SFTP with append-resume), record its sha256."""
    if options.transport != "auto" and options.transport != state.transport:
        state.transport = options.transport
        save_state(options.state_file, state)
    say(f"uploading {options.dump} ({state.dump_size} bytes) over {state.transport}")
    progress = TransferProgress("upload", enabled=options.show_progress)
    if state.transport == "sftp":
        result = await upload_over_sftp(client, state, options, progress)
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


async def upload_over_sftp(
    client: PlatformClient, state: RunState, options: RunOptions, progress: TransferProgress
) -> TransferResult:
    """SFTP upload with a key pair kept in the state file, so a rerun resumes as the same user."""
    if state.ssh_private_key is None or state.ssh_public_key is None:
        pair = generate_ssh_keypair()
        state.ssh_private_key, state.ssh_public_key = pair.private_pem, pair.public_line
        register_secret(state.ssh_private_key)
        save_state(options.state_file, state)
    keypair = SshKeyPair(state.ssh_private_key, state.ssh_public_key)
    grant = await grant_sftp_access(client, state.request_id, state.key, keypair)

    def record_host_key(line: str) -> None:
        # Trust on first use, then pinned for every later attempt and rerun.
        state.sftp_host_key = line
        save_state(options.state_file, state)

    check = host_key_check(None, state.sftp_host_key, record_host_key)
    return await run_in_daemon_thread(
        lambda: upload_sftp(
            grant.access, keypair.private_pem, options.dump, host_key=check, progress=progress
        )
    )


async def start_processing(
    client: PlatformClient, state: RunState, options: RunOptions, say: Say
) -> None:
    """Step 3: `process`, recorded before polling starts."""
    await client.process(state.request_id, state.key)
    state.step = Reached.PROCESSING
    save_state(options.state_file, state)
    say(f"request {state.request_id} is being processed")


async def wait_until_processed(
    client: PlatformClient, state: RunState, options: RunOptions, say: Say
) -> None:
    """Step 4: poll `status` until a final state; `invalid` raises `UpgradeInvalid`."""
    last_state: str | None = None
    while True:
        request = await client.status(state.request_id, state.key)
        if request.state != last_state:
            last_state = request.state
            details = f", estimated time {request.estimated_time}" if request.estimated_time else ""
            say(f"platform state: {request.state}{details}")
            if not V1_STATES.is_known(request.state):
                log.warning(
                    "unknown platform state %r: treated as still in progress", request.state
                )
        if not request.in_progress:
            break
        await asyncio.sleep(options.poll_interval)
    state.platform_state = request.state
    if not request.succeeded:
        save_state(options.state_file, state)
        raise UpgradeInvalid(state.request_id, request.customer_message)
    state.step = Reached.DONE
    save_state(options.state_file, state)


async def download_upgraded_dump(
    client: PlatformClient, state: RunState, options: RunOptions, say: Say
) -> None:
    """Step 5: download with resume to a temp file, verify, rename; `<output>.sha256` beside."""
    output = Path(state.output) if state.output else options.output
    if output.exists():
        digest = await asyncio.to_thread(matching_sidecar_digest, output)
        if digest is None:
            raise DestinationExists(
                f"{output} exists already and is not the download of request "
                f"{state.request_id}; it is never overwritten (move it away and rerun)"
            )
        # A crash between the rename and the state file update: the download is complete.
        record_download(state, options, output.stat().st_size, digest)
        return
    request = await client.status(state.request_id, state.key)
    url = upgraded_url(request, options.format)
    if not url:
        raise UpgradeInvalid(state.request_id, f"the platform offers no {options.format} download")
    say(f"downloading the upgraded dump ({options.format}) to {output}")
    progress = TransferProgress("download", enabled=options.show_progress)
    result = await download_https(url, output, progress=progress)
    progress.finish()
    record_download(state, options, result.bytes, result.sha256)


def record_download(state: RunState, options: RunOptions, size: int, digest: str) -> None:
    state.download_bytes = size
    state.download_sha256 = digest
    state.step = Reached.DOWNLOADED
    save_state(options.state_file, state)


def matching_sidecar_digest(path: Path) -> str | None:
    """The sha256 of `path` when its `.sha256` sidecar agrees with the content, else None."""
    try:
        recorded = sha256_sidecar(path).read_text(encoding="utf-8").split()[0]
    except (OSError, IndexError):
        return None
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1024 * 1024):
            digest.update(chunk)
    return recorded if digest.hexdigest() == recorded else None


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
