"""Requests of the `upgrade/request` API, persisted as JSON, their state derived from the clock.

As in `store.py`, nothing lives only in memory: the state and the upgrade log are functions of
timestamps (`process` time, `--process-seconds`, when the upgraded set was built, when a
cancel came), so a restarted emulator carries on. Layout under `--data-dir`:
`upgrade-requests/<id>/request.json` and `upgrade-requests/<id>/data/` (what the request's SSH
user sees as `/data/`). Only digests of the token and the contract are stored.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import logging
import os
import secrets
import shutil
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from odoo_upgrade.emulator.dumps import DumpInfo, sniff_dump
from odoo_upgrade.emulator.request_upgrade import build_upgraded_set
from odoo_upgrade.emulator.upgrade import UpgradeRefused
from odoo_upgrade.request.upgraded import DEFAULT_DUMP_NAME

log = logging.getLogger(__name__)

FIRST_REQUEST_ID = 70001
# Shares of --process-seconds: `pending` first, then `progress`; markers act at MARKER_SHARE.
PENDING_SHARE = 0.2
MARKER_SHARE = 0.6
# What the upload may be called under /data/, in the order `process` looks for it.
DUMP_NAMES = ("origin.dump", "origin.sql", "origin.sql.gz", "origin.zip")
FINAL_STATES = frozenset({"done", "failed", "cancelled"})
# env_vars markers a test sets at create (documented in docs/INTERNALS.md).
FAIL_MARKER = "ODOO_UPGRADE_EMULATOR_FAIL"
CANCEL_MARKER = "ODOO_UPGRADE_EMULATOR_CANCEL"
PG_INCOMPATIBLE_MARKER = "ODOO_UPGRADE_EMULATOR_PG_INCOMPATIBLE"
UPGRADE_LOG = "upgrade.log"
_MODULES = ("base", "web", "mail", "contacts", "account", "sale", "stock", "website")


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_token() -> str:
    """A request token (43 url-safe characters)."""
    return secrets.token_urlsafe(32)


def env_markers(env_vars: list[str]) -> dict[str, str]:
    """`VAR=VALUE` strings as a dict (the last one wins, as in a shell)."""
    return dict(v.split("=", 1) for v in env_vars if "=" in v)


@dataclass
class UpgradeRequestRecord:
    """One request as persisted in `request.json`."""

    request_id: int
    token_sha256: str
    contract_sha256: str
    target: str
    aim: str
    env_vars: list[str]
    ssh_key: str  # "<type> <base64>": the only key its SSH user may log in with
    created_at: float
    api_version: str | None = None
    process_started_at: float | None = None
    dump_file: str | None = None
    dump: dict[str, Any] | None = None
    fail_reason: str | None = None
    fail_share: float = MARKER_SHARE
    cancel_planned: bool = False
    cancelled_at: float | None = None
    built_at: float | None = None
    archived: bool = False

    @property
    def dump_info(self) -> DumpInfo | None:
        return DumpInfo(**self.dump) if self.dump is not None else None

    @property
    def pg_compatible(self) -> bool:
        return PG_INCOMPATIBLE_MARKER not in env_markers(self.env_vars)


@dataclass(frozen=True)
class RequestState:
    """A request's state at one instant: `status`, `reason`, and when that state began."""

    status: str
    reason: str | None
    since: float


class UpgradeRequestStore:
    """The requests on disk; safe to use from the aiohttp loop and the SSH threads at once."""

    def __init__(
        self, data_dir: Path, process_seconds: float, postgres_url: str | None = None
    ) -> None:
        self.root = data_dir / "upgrade-requests"
        self.postgres_url = postgres_url  # a scratch server: restorable upgraded dumps
        self.root.mkdir(parents=True, exist_ok=True)
        self.process_seconds = max(0.0, process_seconds)
        self._lock = threading.RLock()
        self._building: set[int] = set()

    # -- files ------------------------------------------------------------------------------

    def directory(self, request_id: int) -> Path:
        return self.root / str(request_id)

    def data_dir(self, request_id: int) -> Path:
        """What the request's SSH user sees as `/data/`."""
        return self.directory(request_id) / "data"

    def uploaded_dump(self, request_id: int) -> Path | None:
        """The upload under one of `DUMP_NAMES` (a file, or a directory holding toc.dat)."""
        for name in DUMP_NAMES:
            path = self.data_dir(request_id) / name
            if path.is_file() or (name == "origin.dump" and path.is_dir()):
                return path
        return None

    # -- records ----------------------------------------------------------------------------

    def _save(self, record: UpgradeRequestRecord) -> None:
        directory = self.directory(record.request_id)
        directory.mkdir(parents=True, exist_ok=True)
        partial = directory / ".request.json.part"
        with partial.open("w") as stream:
            json.dump(asdict(record), stream, indent=1, sort_keys=True)
            stream.flush()
            os.fsync(stream.fileno())
        partial.replace(directory / "request.json")

    def get(self, request_id: int) -> UpgradeRequestRecord | None:
        try:
            data = json.loads((self.directory(request_id) / "request.json").read_text())
        except (FileNotFoundError, ValueError):
            return None
        return UpgradeRequestRecord(**data)

    def ids(self) -> list[int]:
        return sorted(int(p.name) for p in self.root.iterdir() if p.name.isdigit())

    def records(self) -> list[UpgradeRequestRecord]:
        return [r for r in (self.get(i) for i in self.ids()) if r is not None]

    def by_token(self, token: str) -> UpgradeRequestRecord | None:
        """The request whose token this is (compared as digests, in constant time each)."""
        wanted = digest(token)
        found = None
        for record in self.records():
            if hmac.compare_digest(record.token_sha256, wanted):
                found = record
        return found

    def create(
        self,
        *,
        contract: str,
        target: str,
        aim: str,
        env_vars: list[str],
        ssh_key: str,
        api_version: str | None,
    ) -> tuple[UpgradeRequestRecord, str]:
        """A new request in state `new`, and its token (returned once, stored as a digest)."""
        token = new_token()
        with self._lock:
            request_id = max(self.ids(), default=FIRST_REQUEST_ID - 1) + 1
            record = UpgradeRequestRecord(
                request_id=request_id,
                token_sha256=digest(token),
                contract_sha256=digest(contract),
                target=target,
                aim=aim,
                env_vars=env_vars,
                ssh_key=ssh_key,
                created_at=time.time(),
                api_version=api_version,
            )
            self._save(record)
            self.data_dir(request_id).mkdir(parents=True, exist_ok=True)
        return record, token

    def update(self, request_id: int, **changes: Any) -> UpgradeRequestRecord:
        """Apply `changes` to the stored record under the lock; the updated record."""
        with self._lock:
            record = self.get(request_id)
            if record is None:
                raise KeyError(request_id)
            record = dataclasses.replace(record, **changes)
            self._save(record)
            return record

    # -- state ------------------------------------------------------------------------------

    def _base_state(self, record: UpgradeRequestRecord, now: float) -> RequestState:
        """The state at `now`, ignoring a cancel from outside (the admin endpoint)."""
        started = record.process_started_at
        if started is None:
            return RequestState("new", None, record.created_at)
        total = self.process_seconds
        progress_at = started + total * PENDING_SHARE
        if now < progress_at and total > 0:
            return RequestState("pending", None, started)
        if record.fail_reason is not None:
            fail_at = started + total * record.fail_share
            if now >= fail_at:
                return RequestState("failed", record.fail_reason, fail_at)
        elif record.cancel_planned:
            cancel_at = started + total * MARKER_SHARE
            if now >= cancel_at:
                return RequestState("cancelled", "Cancelled by the platform", cancel_at)
        elif record.built_at is not None:
            done_at = max(started + total, record.built_at)
            if now >= done_at:
                return RequestState("done", None, done_at)
        return RequestState("progress", None, progress_at)

    def state(self, record: UpgradeRequestRecord, now: float | None = None) -> RequestState:
        """The state of `record` at `now` (default: now), from timestamps only."""
        now = time.time() if now is None else now
        cancelled = record.cancelled_at
        if cancelled is not None and cancelled <= now:
            before = self._base_state(record, cancelled)
            if before.status not in FINAL_STATES:
                return RequestState("cancelled", "Cancelled on request", cancelled)
        return self._base_state(record, now)

    def log_text(self, record: UpgradeRequestRecord, now: float | None = None) -> str:
        """The upgrade log at `now`: lines up to that instant, so it grows while in progress."""
        now = time.time() if now is None else now
        state = self.state(record, now)
        lines = [(record.created_at, "INFO", f"created: {record.aim} upgrade to {record.target}")]
        started = record.process_started_at
        if started is not None:
            total = self.process_seconds
            lines.append((started, "INFO", f"processing /data/{record.dump_file}"))
            lines.append((started + total * PENDING_SHARE, "INFO", "restoring the dump"))
            for index, module in enumerate(_MODULES, start=1):
                share = PENDING_SHARE + (1 - PENDING_SHARE) * index / (len(_MODULES) + 1)
                text = f"upgrading module {module} ({index}/{len(_MODULES)})"
                lines.append((started + total * share, "INFO", text))
        final = state.status in FINAL_STATES
        shown = [line for line in lines if line[0] <= (state.since if final else now)]
        if state.status == "done":
            shown.append((state.since, "INFO", f"upgrade to {record.target} done"))
        elif final:
            shown.append((state.since, "ERROR", f"{state.status}: {state.reason}"))
        return "".join(
            f"{_stamp(at)} {level} request {record.request_id}: {text}\n"
            for at, level, text in shown
        )

    # -- processing -------------------------------------------------------------------------

    def start_processing(self, record: UpgradeRequestRecord) -> UpgradeRequestRecord:
        """Sniff the upload, start the clock, and start building the upgraded set."""
        dump = self.uploaded_dump(record.request_id)
        assert dump is not None
        info = _sniff(dump)
        markers = env_markers(record.env_vars)
        fail_reason: str | None = None
        fail_share = MARKER_SHARE
        if not info.valid:
            fail_reason = info.customer_message or "The uploaded dump could not be read"
            fail_share = PENDING_SHARE
        elif FAIL_MARKER in markers:
            fail_reason = markers[FAIL_MARKER] or "The upgrade failed"
        record = self.update(
            record.request_id,
            process_started_at=time.time(),
            dump_file=dump.name,
            dump=asdict(info),
            fail_reason=fail_reason,
            fail_share=fail_share,
            cancel_planned=CANCEL_MARKER in markers,
        )
        self.ensure_build_started(record)
        return record

    def ensure_build_started(self, record: UpgradeRequestRecord) -> None:
        """Build the upgraded set in a thread unless built, being built, or not wanted."""
        if record.built_at is not None or record.process_started_at is None:
            return
        if record.fail_reason is not None or record.cancel_planned:
            return
        with self._lock:
            if record.request_id in self._building:
                return
            self._building.add(record.request_id)
        threading.Thread(
            target=self._build,
            args=(record.request_id,),
            name=f"upgrade-request-{record.request_id}",
            daemon=True,
        ).start()

    def _build(self, request_id: int) -> None:
        try:
            record = self.get(request_id)
            dump = self.uploaded_dump(request_id)
            info = record.dump_info if record else None
            if record is None or dump is None or info is None or record.built_at is not None:
                return
            build_upgraded_set(
                dump, info, record.target, self.data_dir(request_id), DEFAULT_DUMP_NAME,
                self.postgres_url,
            )  # fmt: skip
            self.update(request_id, built_at=time.time())
        except UpgradeRefused as refused:
            log.warning("request %s: %s", request_id, refused)
            self.update(request_id, fail_reason=str(refused), fail_share=PENDING_SHARE)
        except Exception as exc:
            log.exception("building the upgraded set of request %s failed", request_id)
            self.update(
                request_id,
                fail_reason=f"The upgrade failed on the platform ({type(exc).__name__})",
                fail_share=PENDING_SHARE,
            )
        finally:
            with self._lock:
                self._building.discard(request_id)

    def write_upgrade_log(self, record: UpgradeRequestRecord) -> None:
        """Put the final log under /data/upgrade.log (once done; the log no longer changes)."""
        path = self.data_dir(record.request_id) / UPGRADE_LOG
        if path.exists():
            return
        partial = path.with_name(f".{UPGRADE_LOG}.part")
        partial.write_text(self.log_text(record))
        partial.replace(path)

    def wipe(self, record: UpgradeRequestRecord) -> bool:
        """Delete the request's files and archive it; False while it is still in progress."""
        if self.state(record).status not in FINAL_STATES and record.process_started_at:
            return False
        shutil.rmtree(self.data_dir(record.request_id), ignore_errors=True)
        self.update(record.request_id, archived=True)
        return True

    def resume_builds(self) -> None:
        """After a restart: build again what a stopped emulator left half built."""
        for record in self.records():
            self.ensure_build_started(record)


def _sniff(dump: Path) -> DumpInfo:
    """`sniff_dump`, and for a directory-format dump the header of its toc.dat."""
    if dump.is_dir():
        info = sniff_dump(dump / "toc.dat")
        if info.valid:
            return dataclasses.replace(info, compressions=["pgdmp_directory"])
        return info
    return sniff_dump(dump)


def _stamp(epoch: float) -> str:
    millis = int((epoch % 1) * 1000)
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(epoch)) + f",{millis:03d}"
