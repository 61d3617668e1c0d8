"""Whose bytes a download holds: a `.part` bound to one request and one remote file, and a
receipt that lets the attempt after a crash recognise the file it published.

Beside a destination `<dir>/<name>`:

- `.<name>.part.json` (the part's origin): request id, sha256 of the source (the URL holds the
  key: never stored), the size the server announced and its validator (ETag/Last-Modified
  for HTTPS, size and mtime for SFTP). A part is resumed only when its origin matches the
  request, the source and, by `If-Range` or a fresh stat, the server's current file.
- `.<name>.receipt.json`: written before the part takes the final name; the request id, size,
  sha256 and attempts of what was published. It stays, so that a mover killed between the
  rename and its result finds its own file (`part_file.published_download`) instead of
  failing `DestinationExists`.

Both are written atomically (temp file, fsync, rename) and hold no secret.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class DownloadBinding:
    """The request a download belongs to (an identifier such as the v1 request id; never a
    key or token: it is written beside the file)."""

    request_id: str

    def __post_init__(self) -> None:
        if not str(self.request_id):
            raise ValueError("DownloadBinding needs a non-empty request id")


def source_digest(source: str) -> str:
    """sha256 of what is downloaded (a URL, which holds the key, or an SFTP file name)."""
    return hashlib.sha256(source.encode()).hexdigest()


@dataclass(frozen=True)
class PartOrigin:
    """What the bytes of a `.part` are: from which request, source and version of the file."""

    request_id: str
    source_sha256: str
    size: int | None  # as the server announced it; None when it did not
    validator: str  # what proves the server's file unchanged; "" when it gave none

    def continues(self, binding: DownloadBinding, source: str) -> bool:
        """True when a part of this origin may be resumed by `binding` downloading `source`."""
        return (
            self.request_id == str(binding.request_id)
            and self.source_sha256 == source_digest(source)
            and bool(self.validator)
        )


@dataclass(frozen=True)
class Receipt:
    """What an attempt published under the final name, recorded before the rename."""

    request_id: str
    source_sha256: str
    bytes: int
    sha256: str
    attempts: int


def origin_path(destination: Path) -> Path:
    return destination.with_name(f".{destination.name}.part.json")


def receipt_path(destination: Path) -> Path:
    return destination.with_name(f".{destination.name}.receipt.json")


def write_json_atomically(path: Path, data: dict[str, Any]) -> None:
    """Replace `path` with `data` as JSON, whole or not at all, durably."""
    temp = path.with_name(f"{path.name}.tmp")
    with open(temp, "w", encoding="utf-8") as out:
        json.dump(data, out, sort_keys=True)
        out.flush()
        os.fsync(out.fileno())
    os.replace(temp, path)
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def read_origin(destination: Path) -> PartOrigin | None:
    """The recorded origin of the part of `destination`, or None (none, or unreadable)."""
    data = _read_json(origin_path(destination))
    if data is None:
        return None
    try:
        return PartOrigin(
            request_id=str(data["request_id"]),
            source_sha256=str(data["source_sha256"]),
            size=None if data["size"] is None else int(data["size"]),
            validator=str(data["validator"]),
        )
    except (KeyError, TypeError, ValueError):
        return None


def write_origin(destination: Path, origin: PartOrigin) -> None:
    write_json_atomically(origin_path(destination), asdict(origin))


def clear_origin(destination: Path) -> None:
    origin_path(destination).unlink(missing_ok=True)


def remove_receipt(destination: Path) -> None:
    """Forget a receipt once its holder recorded the result elsewhere (its window is over)."""
    receipt_path(destination).unlink(missing_ok=True)


def read_receipt(destination: Path) -> Receipt | None:
    data = _read_json(receipt_path(destination))
    if data is None:
        return None
    try:
        return Receipt(
            request_id=str(data["request_id"]),
            source_sha256=str(data["source_sha256"]),
            bytes=int(data["bytes"]),
            sha256=str(data["sha256"]),
            attempts=int(data["attempts"]),
        )
    except (KeyError, TypeError, ValueError):
        return None


def write_receipt(destination: Path, receipt: Receipt) -> None:
    write_json_atomically(receipt_path(destination), asdict(receipt))
