"""Upgrade requests persisted as JSON under `--data-dir`, their state derived from the clock.

Nothing about a request's progress lives only in memory: the state is computed from when
`process` was called and `--process-seconds`, so an emulator restarted mid-processing carries on
to `done`. Layout: `requests/<id>/request.json`, `requests/<id>/original` (the uploaded dump),
`requests/<id>/upgraded.zip` (built in a background thread once processing starts).
"""

from __future__ import annotations

import base64
import json
import logging
import os
import secrets
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from odoo_upgrade.emulator.dumps import DumpInfo, sniff_dump
from odoo_upgrade.emulator.upgrade import UpgradeRefused, build_upgraded

log = logging.getLogger(__name__)

FIRST_REQUEST_ID = 10534
# Shares of --process-seconds spent in `pending` and `processing`; `testing` takes the rest.
PENDING_SHARE = 0.2
PROCESSING_SHARE = 0.5


@dataclass
class RequestRecord:
    """One upgrade request as persisted in `request.json`."""

    id: int
    key: str
    email: str
    target: str
    aim: str
    filename: str
    timezone: str | None
    created_at: float
    issue: int
    ssh_keys: list[str] = field(default_factory=list)
    process_started_at: float | None = None
    skipped_at: float | None = None
    database_uuid: str | None = None
    dump: dict[str, Any] | None = None
    upgraded: dict[str, int] | None = None

    @property
    def dump_info(self) -> DumpInfo | None:
        return DumpInfo(**self.dump) if self.dump is not None else None


@dataclass(frozen=True)
class RequestView:
    """A request's state at one instant, as `status` reports it."""

    state: str
    processing_started_at: float | None
    finished_at: float | None


def new_key() -> str:
    """A request key shaped like the platform's (`Aw7pItGVKFuZ_FOR3U8VFQ==`)."""
    return base64.urlsafe_b64encode(secrets.token_bytes(16)).decode()


class RequestStore:
    """Requests on disk, safe to use from the aiohttp loop and the SFTP threads at once."""

    def __init__(self, data_dir: Path, process_seconds: float) -> None:
        self.root = data_dir / "requests"
        self.root.mkdir(parents=True, exist_ok=True)
        self.process_seconds = max(0.0, process_seconds)
        self._lock = threading.RLock()
        self._building: set[int] = set()

    # -- files ---------------------------------------------------------------------------

    def directory(self, request_id: int) -> Path:
        return self.root / str(request_id)

    def original_path(self, request_id: int) -> Path:
        return self.directory(request_id) / "original"

    def upgraded_path(self, request_id: int) -> Path:
        return self.directory(request_id) / "upgraded.zip"

    def original_size(self, request_id: int) -> int | None:
        try:
            return self.original_path(request_id).stat().st_size
        except FileNotFoundError:
            return None

    # -- records -------------------------------------------------------------------------

    def _save(self, record: RequestRecord) -> None:
        directory = self.directory(record.id)
        directory.mkdir(parents=True, exist_ok=True)
        partial = directory / ".request.json.part"
        with partial.open("w") as stream:
            json.dump(asdict(record), stream, indent=1, sort_keys=True)
            stream.flush()
            os.fsync(stream.fileno())
        partial.replace(directory / "request.json")

    def get(self, request_id: int) -> RequestRecord | None:
        try:
            data = json.loads((self.directory(request_id) / "request.json").read_text())
        except (FileNotFoundError, ValueError):
            return None
        return RequestRecord(**data)

    def ids(self) -> list[int]:
        return sorted(int(p.name) for p in self.root.iterdir() if p.name.isdigit())

    def create(
        self, *, email: str, target: str, aim: str, filename: str, timezone: str | None
    ) -> RequestRecord:
        """Create a request in `draft` with a fresh id and key."""
        with self._lock:
            request_id = max(self.ids(), default=FIRST_REQUEST_ID - 1) + 1
            record = RequestRecord(
                id=request_id,
                key=new_key(),
                email=email,
                target=target,
                aim=aim,
                filename=filename,
                timezone=timezone,
                created_at=time.time(),
                issue=600000 + request_id,
            )
            self._save(record)
            return record

    def set_ssh_keys(self, request_id: int, keys: list[str]) -> None:
        with self._lock:
            record = self.get(request_id)
            if record is not None:
                record.ssh_keys = keys
                self._save(record)

    def start_processing(self, record: RequestRecord) -> RequestRecord:
        """Sniff the upload and start the clock (and the upgrade build) for `record`."""
        with self._lock:
            info = sniff_dump(self.original_path(record.id))
            record.dump = asdict(info)
            record.process_started_at = time.time()
            record.database_uuid = str(uuid.uuid4())
            self._save(record)
        self.ensure_upgrade_started(record)
        return record

    def skip_test(self, record: RequestRecord) -> RequestRecord:
        with self._lock:
            record.skipped_at = time.time()
            self._save(record)
        return record

    # -- state ---------------------------------------------------------------------------

    def view(self, record: RequestRecord, now: float | None = None) -> RequestView:
        """The state of `record` at `now`, derived from timestamps only."""
        now = time.time() if now is None else now
        started = record.process_started_at
        if started is None:
            return RequestView("draft", None, None)
        total = self.process_seconds
        processing_at = started + total * PENDING_SHARE
        info = record.dump_info
        if now < processing_at and total > 0:
            return RequestView("pending", None, None)
        if info is not None and not info.valid:
            return RequestView("invalid", processing_at, processing_at)
        if record.skipped_at is not None:
            return RequestView("delivered", processing_at, record.skipped_at)
        if now < started + total * PROCESSING_SHARE:
            return RequestView("processing", processing_at, None)
        if now < started + total or record.upgraded is None:
            self.ensure_upgrade_started(record)
            return RequestView("testing", processing_at, None)
        return RequestView("done", processing_at, max(started + total, processing_at))

    def upgraded_ready(self, record: RequestRecord) -> bool:
        return self.view(record).state in ("done", "delivered") and record.upgraded is not None

    def ensure_upgrade_started(self, record: RequestRecord) -> None:
        """Build the upgraded archive in a thread unless built or being built (idempotent)."""
        info = record.dump_info
        if record.upgraded is not None or info is None or not info.valid:
            return
        with self._lock:
            if record.id in self._building:
                return
            self._building.add(record.id)
        thread = threading.Thread(
            target=self._build, args=(record.id,), name=f"upgrade-{record.id}", daemon=True
        )
        thread.start()

    def _build(self, request_id: int) -> None:
        try:
            record = self.get(request_id)
            info = record.dump_info if record else None
            if record is None or info is None or record.upgraded is not None:
                return
            files = build_upgraded(
                self.original_path(request_id), info, record.target, self.upgraded_path(request_id)
            )
            with self._lock:
                fresh = self.get(request_id)
                if fresh is not None:
                    fresh.upgraded = {
                        "sql_offset": files.sql_offset,
                        "sql_length": files.sql_length,
                    }
                    self._save(fresh)
        except UpgradeRefused as refused:
            # The dump cannot be upgraded: the request turns `invalid`, saying why.
            with self._lock:
                fresh = self.get(request_id)
                if fresh is not None and fresh.dump is not None:
                    fresh.dump = {**fresh.dump, "valid": False, "customer_message": str(refused)}
                    self._save(fresh)
            log.warning("request %s: %s", request_id, refused)
        except Exception:
            log.exception("building the upgraded dump of request %s failed", request_id)
        finally:
            with self._lock:
                self._building.discard(request_id)

    def resume_builds(self) -> None:
        """After a restart: drop half-received HTTPS uploads, restart cut-short builds."""
        for leftover in self.root.glob("*/.original.*.part"):
            leftover.unlink(missing_ok=True)
        for request_id in self.ids():
            record = self.get(request_id)
            if record is not None and record.process_started_at is not None:
                self.ensure_upgrade_started(record)
