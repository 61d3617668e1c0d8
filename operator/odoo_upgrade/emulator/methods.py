"""The v1 methods as plain functions of their parameters: what the platform answers.

HTTP details (where parameters come from, streaming the upload body) live in `http_api.py`;
here each method takes a dict of parameters and returns `(http_status, answer)` where the
answer is the platform's `{"failures": [...], "request": {...}}` shape.
"""

from __future__ import annotations

import hmac
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

from odoo_upgrade.emulator.config import EmulatorConfig
from odoo_upgrade.emulator.store import RequestRecord, RequestStore

AIMS = ("test", "production")
KEY_URL_REGION = "eu1"
UPLOAD_STATES = ("draft",)
SFTP_STATES = ("draft", "done", "delivered")
SKIP_TEST_STATES = ("testing", "done", "delivered")

Answer = tuple[int, dict[str, Any]]


def failure(reason: str, message: str, **extra: Any) -> dict[str, Any]:
    """One entry of `failures`: always `reason` and `message`, sometimes more."""
    return {"reason": reason, "message": message, **extra}


@dataclass
class ApiRefusal(Exception):
    """A method refused: the HTTP status and the failures to answer with."""

    status: int
    failures: list[dict[str, Any]] = field(default_factory=list)

    def answer(self) -> Answer:
        return self.status, {"failures": self.failures}


def request_not_found() -> ApiRefusal:
    """The one answer for an unknown id and a wrong key alike: it reveals neither."""
    return ApiRefusal(
        404, [failure("REQUEST:NOT_FOUND", "No request matches this request id and key")]
    )


def format_filesize(size: int | None) -> str | None:
    """Sizes the way the platform writes them: '912.99 Kb', '12.30 Mb', '1.50 Gb'."""
    if size is None:
        return None
    for unit, scale in (("Gb", 1 << 30), ("Mb", 1 << 20)):
        if size >= scale:
            return f"{size / scale:.2f} {unit}"
    return f"{size / 1024:.2f} Kb"


def format_timestamp(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(epoch))


def format_duration(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    minutes = int(max(0.0, seconds) // 60)
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def _required(params: dict[str, str], *names: str) -> list[dict[str, Any]]:
    return [
        failure("PARAM:MISSING", f'Missing required parameter "{name}"', value=name)
        for name in names
        if not params.get(name, "").strip()
    ]


def parse_ssh_keys(text: str) -> list[str]:
    """Public keys of an authorized_keys text ('<type> <base64>'); blank and # lines skipped.

    Raises ApiRefusal naming the first line that is not a public key.
    """
    keys: list[str] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        words = line.split()
        # authorized_keys lines may start with options; the key type is the first word that
        # looks like one, followed by its base64 blob.
        for index, word in enumerate(words[:-1]):
            if word.startswith(("ssh-", "ecdsa-", "sk-")):
                keys.append(f"{word} {words[index + 1]}")
                break
        else:
            raise ApiRefusal(
                400,
                [
                    failure(
                        "SSH_KEYS:INVALID",
                        f"Line {number} of ssh_keys is not an SSH public key",
                        value=str(number),
                    )
                ],
            )
    if not keys:
        raise ApiRefusal(
            400, [failure("SSH_KEYS:INVALID", "ssh_keys holds no SSH public key", value="")]
        )
    return keys


class PlatformApi:
    """The v1 methods over a `RequestStore`."""

    def __init__(self, config: EmulatorConfig, store: RequestStore, public_base: str) -> None:
        self.config = config
        self.store = store
        self.public_base = public_base.rstrip("/")
        self.sftp_port = config.sftp_port

    # -- helpers -------------------------------------------------------------------------

    def authenticate(self, request_id: str | None, key: str | None) -> RequestRecord:
        """The request `request_id` if `key` is its key; one answer for every mismatch."""
        if not request_id or not key:
            raise ApiRefusal(
                400, _required({"request": request_id or "", "key": key or ""}, "request", "key")
            )
        record = self.store.get(int(request_id)) if request_id.strip().isdigit() else None
        # Compare even when the id is unknown, so that timing does not tell the two apart.
        expected = record.key if record is not None else "-" * len(key)
        if not hmac.compare_digest(expected.encode(), key.encode()) or record is None:
            raise request_not_found()
        return record

    def key_url(self, record: RequestRecord, path: str) -> str:
        return f"{self.public_base}/database/{KEY_URL_REGION}/{record.id}/{record.key}/{path}"

    def request_dict(self, record: RequestRecord) -> dict[str, Any]:
        """The full `request` dictionary of `status`, keys in the documented order."""
        view = self.store.view(record)
        info = record.dump_info
        finished = view.finished_at
        elapsed: float | None = 0.0
        if view.processing_started_at is not None:
            elapsed = (finished or time.time()) - view.processing_started_at
        in_progress = view.state in ("pending", "processing", "testing")
        return {
            "id": record.id,
            "key": record.key,
            "email": record.email,
            "target": record.target,
            "aim": record.aim,
            "filename": record.filename,
            "timezone": record.timezone,
            "state": view.state,
            "issue_stage": {
                "draft": "new",
                "pending": "new",
                "done": "done",
                "delivered": "done",
                "invalid": "cancelled",
            }.get(view.state, "in progress"),
            "issue": record.issue,
            "status_url": self.key_url(record, "status"),
            "notes_url": self.key_url(record, "upgraded/notes"),
            "original_sql_url": self.key_url(record, "original/sql"),
            "original_dump_url": self.key_url(record, "original/archive"),
            "upgraded_sql_url": self.key_url(record, "upgraded/sql"),
            "upgraded_dump_url": self.key_url(record, "upgraded/archive"),
            "modules_url": self.key_url(record, "modules/archive"),
            "filesize": format_filesize(self.store.original_size(record.id)),
            "database_uuid": record.database_uuid,
            "created_at": format_timestamp(record.created_at),
            "estimated_time": format_duration(self.store.process_seconds) if in_progress else None,
            "processed_at": format_timestamp(view.processing_started_at),
            "elapsed": format_duration(elapsed),
            "filestore": bool(info and info.filestore),
            "customer_message": info.customer_message if info else None,
            "database_version": info.database_version if info else None,
            "postgresql": info.postgresql if info else None,
            "compressions": list(info.compressions) if info else [],
        }

    def _ok(self, record: RequestRecord) -> Answer:
        return 200, {"failures": [], "request": self.request_dict(record)}

    def _require_state(self, record: RequestRecord, allowed: tuple[str, ...], action: str) -> None:
        state = self.store.view(record).state
        if state not in allowed:
            raise ApiRefusal(
                409,
                [
                    failure(
                        "STATE:INVALID",
                        f'Cannot {action} a request in state "{state}"',
                        value=state,
                        expected=list(allowed),
                    )
                ],
            )

    # -- methods -------------------------------------------------------------------------

    def create(self, params: dict[str, str]) -> Answer:
        failures = _required(params, "contract", "email", "target", "aim", "filename")
        target = params.get("target", "").strip()
        if target and target not in self.config.targets:
            failures.append(
                failure(
                    "TARGET:INVALID",
                    f'Invalid value "{target}"',
                    value=target,
                    expected=list(self.config.targets),
                )
            )
        contract = params.get("contract", "").strip()
        if contract and contract not in self.config.contracts:
            failures.append(
                failure("CONTRACT:NOT_FOUND", f"Can not find contract {contract}", code=contract)
            )
        aim = params.get("aim", "").strip()
        if aim and aim not in AIMS:
            failures.append(
                failure("AIM:INVALID", f'Invalid value "{aim}"', value=aim, expected=list(AIMS))
            )
        email = params.get("email", "").strip()
        if email and "@" not in email:
            failures.append(
                failure("EMAIL:INVALID", f'Invalid email address "{email}"', value=email)
            )
        filename = params.get("filename", "").strip()
        if filename and ("/" in filename or filename in (".", "..")):
            failures.append(
                failure("FILENAME:INVALID", "filename must be a plain file name", value=filename)
            )
        if failures:
            return 400, {"failures": failures}
        record = self.store.create(
            email=email,
            target=target,
            aim=aim,
            filename=filename,
            timezone=params.get("timezone") or None,
        )
        return self._ok(record)

    def begin_upload(self, params: dict[str, str]) -> RequestRecord:
        """Check an `upload` may go ahead, before its body is read."""
        record = self.authenticate(params.get("request"), params.get("key"))
        self._require_state(record, UPLOAD_STATES, "upload a dump to")
        return record

    def finish_upload(self, record: RequestRecord) -> Answer:
        return self._ok(record)

    def request_sftp_access(self, params: dict[str, str]) -> Answer:
        record = self.authenticate(params.get("request"), params.get("key"))
        missing = _required(params, "ssh_keys")
        if missing:
            raise ApiRefusal(400, missing)
        self._require_state(record, SFTP_STATES, "open SFTP access to")
        keys = parse_ssh_keys(params["ssh_keys"])
        self.store.set_ssh_keys(record.id, keys)
        hostname = urlparse(self.config.public_url).hostname if self.config.public_url else None
        hostname = hostname or self.config.host
        user = f"user_{record.id}"
        return 200, {
            "failures": [],
            "request": {
                "hostname": hostname,
                "sftp_port": self.sftp_port,
                "sftp_user": user,
                "shared_file": record.filename,
                "request_id": record.id,
                "sample_command": f"sftp -P {self.sftp_port} {user}@{hostname}",
            },
        }

    def process(self, params: dict[str, str]) -> Answer:
        record = self.authenticate(params.get("request"), params.get("key"))
        if record.process_started_at is not None:
            return self._ok(record)  # asked twice (a client retry): nothing more to do
        if not self.store.original_size(record.id):
            raise ApiRefusal(
                409, [failure("FILE:MISSING", "No database dump was uploaded for this request")]
            )
        return self._ok(self.store.start_processing(record))

    def status(self, params: dict[str, str]) -> Answer:
        return self._ok(self.authenticate(params.get("request"), params.get("key")))

    def skip_test(self, params: dict[str, str]) -> Answer:
        record = self.authenticate(params.get("request"), params.get("key"))
        if record.skipped_at is None:
            self._require_state(record, SKIP_TEST_STATES, "skip the tests of")
            record = self.store.skip_test(record)
        return self._ok(record)
