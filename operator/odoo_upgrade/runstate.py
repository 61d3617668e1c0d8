"""The state file of `odoo-upgrade run`: what lets a rerun continue the same request.

The file sits next to the dump (`<dump>.odoo-upgrade.json` by default) and holds the request id
and its private key, so it IS a secret: it is created with mode 0600 and replaced atomically
(temp file + fsync + rename), never rewritten in place. The contract never goes into it.

It is written after each step, before the next one starts: a crash or Ctrl-C between two steps
therefore loses at most the work of the step in flight, and never leads to a second `create`.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import asdict, dataclass, field, fields
from enum import StrEnum
from pathlib import Path
from typing import Any

STATE_FORMAT_VERSION = 1


class Step(StrEnum):
    """The last step `run` completed, in the order the flow reaches them."""

    CREATED = "created"
    UPLOADED = "uploaded"
    PROCESSING = "processing"
    DONE = "done"
    DOWNLOADED = "downloaded"

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
    """Everything a rerun needs to continue a request; secret (request key, SSH private key)."""

    request_id: int
    key: str
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
    version: int = field(default=STATE_FORMAT_VERSION)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["step"] = str(self.step)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunState:
        known = {f.name for f in fields(cls)}
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


def load_state(path: Path) -> RunState | None:
    """Read the state file, or None when there is none (a first run)."""
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
    return RunState.from_json(data)


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
