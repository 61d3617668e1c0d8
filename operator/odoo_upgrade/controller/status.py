"""What `.status` shows about a request and its transfers: pure builders, no API calls.

Nothing here may carry the request key or a URL (they embed the key).
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Mapping
from typing import Any

from odoo_upgrade.controller import conditions as cond
from odoo_upgrade.platform import UpgradeRequest

# Keys of `.status.platform` (so that a key the platform stopped sending is removed).
PLATFORM_KEYS = (
    "state",
    "issueStage",
    "estimatedTime",
    "processedAt",
    "elapsed",
    "databaseVersion",
    "postgresql",
    "compressions",
    "filesize",
    "customerMessage",
)

_PROGRESS_LINE = re.compile(r"(\d+)/(\d+) bytes")


def human_bytes(count: int) -> str:
    size = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


def progress_text(done: int, total: int | None) -> str:
    """`42% (1.2 GiB/3.0 GiB)` for the Progress printer column."""
    if total:
        return f"{min(100, done * 100 // total)}% ({human_bytes(done)}/{human_bytes(total)})"
    return human_bytes(done)


def parse_progress_line(log: str) -> tuple[int, int] | None:
    """(done, total) from the mover's last progress line (`... 123/456 bytes ...`)."""
    found = _PROGRESS_LINE.findall(log)
    if not found:
        return None
    done, total = found[-1]
    return int(done), int(total)


def platform_status(request: UpgradeRequest, checked_at: str) -> dict[str, Any]:
    """`.status.platform` for a platform answer: the public view, keys it lacks set to null
    (a merge patch then removes them), and when it was checked. Never a URL or the key."""
    view = request.public_view()
    mirrored: dict[str, Any] = {key: view.get(key) for key in PLATFORM_KEYS}
    mirrored["lastCheckTime"] = checked_at
    return mirrored


def uploaded_status(result: Mapping[str, Any], transport: str) -> dict[str, Any]:
    """`.status.upload` once the mover reported success."""
    size = int(result.get("bytes") or 0)
    return {
        "transport": str(result.get("transport") or transport),
        "bytesDone": size,
        "bytesTotal": size,
        "sha256": result.get("sha256"),
        "attempts": int(result.get("attempts") or 1),
        "completedAt": cond.now_rfc3339(),
    }


def downloaded_status(result: Mapping[str, Any], path: str) -> dict[str, Any]:
    """`.status.download` once the mover reported success (the path inside the volume)."""
    return {
        "path": path,
        "bytes": int(result.get("bytes") or 0),
        "sha256": result.get("sha256"),
        "completedAt": cond.now_rfc3339(),
    }


def seconds_since(timestamp: str | None) -> float | None:
    if not timestamp:
        return None
    try:
        then = datetime.datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ").replace(
            tzinfo=datetime.UTC
        )
    except ValueError:
        return None
    return (datetime.datetime.now(datetime.UTC) - then).total_seconds()
