"""The state file of `odoo-upgrade run`: what lets a rerun continue the same request.

The file sits next to the dump (`<dump>.odoo-upgrade.json` by default) and holds the request id
and its private key (database-v1) or token (upgrade-request, with its assigned host and SSH key
pair), so it IS a secret: it is created with mode 0600 and replaced atomically (temp file +
fsync + rename), never rewritten in place. The contract never goes into it.

It is written after each step, before the next one starts: a crash or Ctrl-C between two steps
therefore loses at most the work of the step in flight, and never leads to a second `create`.

With `--database` the dump is made before the request exists: the file then holds a
`DumpRecord` (step `dumped`, no request yet) until `create` replaces it with a `RunState`
that carries the dump's figures on.

Just before `create` is sent the file holds a `CreateAttempt` (step `creating`): a run killed
while the answer was on its way leaves it, and a rerun refuses rather than open (and bill) a
second request. An answer saying no request was made puts back what was there before.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import asdict, dataclass, field, fields
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

from odoo_upgrade.request.platform import PlatformApi

STATE_FORMAT_VERSION = 1
RecordT = TypeVar("RecordT", "DumpRecord", "CreateAttempt")
TOKEN_FIELD = "token"  # noqa: S105 - how an upgrade-request file names the request's secret


class Step(StrEnum):
    """The last step `run` completed, in the order the flow reaches them."""

    CREATED = "created"
    UPLOADED = "uploaded"
    PROCESSING = "processing"
    DONE = "done"
    DOWNLOADED = "downloaded"
    RESTORED = "restored"  # with --restore-name: the upgraded dump restored and verified

    @property
    def rank(self) -> int:
        return list(Step).index(self)

    def reached(self, other: Step) -> bool:
        """True when this step is `other` or comes after it."""
        return self.rank >= other.rank


class StateFileError(Exception):
    """The state file cannot be read, or does not belong to the arguments given."""


@dataclass
class RunState:
    """Everything a rerun needs to continue a request; secret (request key or token, SSH
    private key)."""

    request_id: int
    key: str  # database-v1 `key`, or the upgrade-request `token` (written as "token")
    platform_url: str
    dump: str
    dump_size: int
    target: str
    aim: str
    filename: str
    transport: str
    step: Step = Step.CREATED
    upload_bytes: int | None = None
    upload_sha256: str | None = None
    # The SFTP key pair and the host key seen on first use, so a resumed upload authenticates
    # with the key the platform already knows and talks to the same server.
    ssh_private_key: str | None = None
    ssh_public_key: str | None = None
    sftp_host_key: str | None = None
    platform_state: str | None = None
    output: str | None = None
    download_bytes: int | None = None
    download_sha256: str | None = None
    # With --database / --restore-name: what was dumped, and what was restored.
    database: str | None = None
    dump_sha256: str | None = None
    dump_server_version: str | None = None
    restore_name: str | None = None
    restore_base_version: str | None = None
    restore_filestore_files: int | None = None
    version: int = field(default=STATE_FORMAT_VERSION)
    api: str = PlatformApi.DATABASE_V1.value
    assigned_host: str | None = None  # upgrade-request: where every call after create goes
    download_files: int | None = None  # upgrade-request: files of the downloaded set
    download_dump: str | None = None  # upgrade-request: the dump's path inside the set
    download_transport: str | None = None  # database-v1: https or sftp (as the dump went)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["step"] = str(self.step)
        if self.api != PlatformApi.DATABASE_V1.value:
            data[TOKEN_FIELD] = data.pop("key")
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunState:
        known = {f.name for f in fields(cls)}
        data = dict(data)
        if TOKEN_FIELD in data and "key" not in data:
            data["key"] = data.pop(TOKEN_FIELD)
        values = {k: v for k, v in data.items() if k in known}
        try:
            values["step"] = Step(values.get("step", Step.CREATED))
            state = cls(**values)
        except (TypeError, ValueError) as exc:
            raise StateFileError(f"state file is not in the expected shape: {exc}") from None
        if state.version != STATE_FORMAT_VERSION:
            raise StateFileError(
                f"state file format {state.version} is not supported "
                f"(expected {STATE_FORMAT_VERSION})"
            )
        return state


def _plain_record(cls: type[RecordT], data: dict[str, Any]) -> RecordT:
    """A record of plain fields (nothing secret, no request yet) from its JSON; unknown keys
    are ignored, as a newer version may add some."""
    known = {f.name for f in fields(cls)}
    try:
        return cls(**{k: v for k, v in data.items() if k in known})
    except TypeError as exc:
        raise StateFileError(f"state file is not in the expected shape: {exc}") from None


DUMPED = "dumped"  # the step of a state file holding a DumpRecord


@dataclass
class DumpRecord:
    """A dump `run --database` made before the request exists (nothing secret in it)."""

    database: str
    dump: str  # resolved path
    dump_size: int
    dump_sha256: str
    server_version: str
    target: str
    platform_url: str
    step: str = DUMPED
    version: int = field(default=STATE_FORMAT_VERSION)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DumpRecord:
        return _plain_record(cls, data)


CREATING = "creating"  # the step of a state file holding a CreateAttempt


@dataclass
class CreateAttempt:
    """`create` was sent at `attempted_at` and its answer is not recorded yet (nothing secret
    in it; `before`: the DumpRecord the file held, put back if no request was made)."""

    platform_url: str
    target: str
    dump: str  # resolved path
    attempted_at: str
    before: dict[str, Any] | None = None
    step: str = CREATING
    version: int = field(default=STATE_FORMAT_VERSION)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CreateAttempt:
        return _plain_record(cls, data)


def load_state(path: Path) -> RunState | None:
    """Read the state file, or None when there is none (a first run) or it records only a
    dump made before the request (`load_dump_record`) or a `create` sent (`load_attempt`)."""
    data = _read_state_file(path)
    if data is None or data.get("step") in (DUMPED, CREATING):
        return None
    return RunState.from_json(data)


def load_attempt(path: Path) -> CreateAttempt | None:
    """The `create` a run sent and never saw answered, if that is what the file holds."""
    data = _read_state_file(path)
    if data is None or data.get("step") != CREATING:
        return None
    return CreateAttempt.from_json(data)


def save_attempt(path: Path, attempt: CreateAttempt) -> None:
    write_secret_file(path, json.dumps(attempt.to_json(), indent=2, sort_keys=True) + "\n")


def undo_attempt(path: Path, attempt: CreateAttempt) -> None:
    """No request was made: the file holds again what it held before the attempt."""
    if attempt.before is not None:
        save_dump_record(path, DumpRecord.from_json(attempt.before))
    else:
        path.unlink(missing_ok=True)


def load_dump_record(path: Path) -> DumpRecord | None:
    """The dump recorded before the request was created, if that is what the file holds."""
    data = _read_state_file(path)
    if data is None or data.get("step") != DUMPED:
        return None
    return DumpRecord.from_json(data)


def save_dump_record(path: Path, record: DumpRecord) -> None:
    write_secret_file(path, json.dumps(record.to_json(), indent=2, sort_keys=True) + "\n")


def _read_state_file(path: Path) -> dict[str, Any] | None:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StateFileError(f"cannot read state file {path}: {exc.strerror}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise StateFileError(f"state file {path} is not valid JSON: {exc.msg}") from None
    if not isinstance(data, dict):
        raise StateFileError(f"state file {path} must hold a JSON object")
    return data


def save_state(path: Path, state: RunState) -> None:
    """Replace the state file atomically; the new file is mode 0600 from its first byte."""
    write_secret_file(path, json.dumps(state.to_json(), indent=2, sort_keys=True) + "\n")


def write_secret_file(path: Path, text: str) -> None:
    """Write `text` to `path` atomically with mode 0600 (temp file, fsync, rename, fsync dir)."""
    directory = path.parent
    tmp = directory / f".{path.name}.{os.getpid()}.tmp"
    # O_EXCL: never follow or reuse a file someone else put there; 0600 before any byte lands.
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        # Left by a killed run that had our pid (common in containers, where pids repeat).
        tmp.unlink()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
