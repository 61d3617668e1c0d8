"""What `.status` shows about a request and its transfers: pure builders, no API calls.

Nothing here may carry the request key or a URL (they embed the key). Every string that came
from the platform is redacted (a platform may echo a secret back) and cut to a length that
fits a condition or a status field.
"""

from __future__ import annotations

import datetime
import posixpath
from collections.abc import Iterable
from typing import Any

from odoo_upgrade.controller import conditions as cond
from odoo_upgrade.platform import Failure
from odoo_upgrade.redact import redact
from odoo_upgrade.request.mover_result import MoverResult
from odoo_upgrade.request.platform import PlatformStatus

# Longest platform text kept in a status field or condition message (metav1.Condition allows
# 32 KiB; a platform message of that size is noise, and status is read on every pass).
PLATFORM_TEXT_LIMIT = 2048
# Longest log line shown as `.status.progress` (a printer column: one screen line).
LOG_LINE_LIMIT = 200


def platform_text(value: Any) -> Any:
    """A value copied from the platform, safe to show: redacted and bounded (strings only)."""
    if isinstance(value, str):
        text = redact(value)
        return text if len(text) <= PLATFORM_TEXT_LIMIT else text[: PLATFORM_TEXT_LIMIT - 1] + "…"
    if isinstance(value, list):
        return [platform_text(item) for item in value]
    return value


def platform_status(view: PlatformStatus, checked_at: str) -> dict[str, Any]:
    """`.status.platform` for a platform answer: every public key (null where the platform
    sent none, so a merge patch removes it) and when it was checked. Never a URL or the key."""
    mirrored: dict[str, Any] = {key: platform_text(value) for key, value in view.public.items()}
    mirrored["lastCheckTime"] = checked_at
    return mirrored


def failures_status(failures: Iterable[Failure | dict[str, Any]]) -> list[dict[str, Any]]:
    """`.status.failures` as the platform sent them, each field redacted and bounded."""
    shown = []
    for failure in failures:
        data = failure.to_json() if isinstance(failure, Failure) else dict(failure)
        shown.append({key: platform_text(value) for key, value in data.items()})
    return shown


def uploaded_status(result: MoverResult, transport: str) -> dict[str, Any]:
    """`.status.upload` once the mover reported success."""
    size = result.bytes or 0
    return {
        "transport": result.transport or transport,
        "bytesDone": size,
        "bytesTotal": size,
        "sha256": result.sha256,
        "attempts": result.attempts or 1,
        "completedAt": cond.now_rfc3339(),
    }


def downloaded_status(result: MoverResult, path: str) -> dict[str, Any]:
    """`.status.download` once the mover reported success (the path inside the volume)."""
    return {
        "path": path,
        "transport": result.transport or "https",
        "bytes": result.bytes or 0,
        "sha256": result.sha256,
        "completedAt": cond.now_rfc3339(),
    }


def preflight_status(result: MoverResult) -> dict[str, Any]:
    """`.status.preflight` once the check Job passed (server versions from its details)."""
    source = result.details.get("source") or {}
    restore = result.details.get("restore") or {}
    return {
        "completedAt": cond.now_rfc3339(),
        "sourceServerVersion": source.get("serverVersion"),
        "restoreServerVersion": restore.get("serverVersion"),
    }


def dumped_status(result: MoverResult) -> dict[str, Any]:
    """`.status.dump` once the dump Job wrote the dump."""
    size = result.bytes or 0
    return {
        "bytes": size,
        "sha256": result.sha256,
        "serverVersion": result.details.get("serverVersion"),
        "bytesDone": size,
        "bytesTotal": size,
        "completedAt": cond.now_rfc3339(),
    }


def dumped_bytes(status: dict[str, Any]) -> int | None:
    """The size of the dump the operator made (`.status.dump`), None if it made none."""
    dump = status.get("dump") or {}
    size = dump.get("bytes")
    return size if dump.get("completedAt") and isinstance(size, int) else None


def restored_status(result: MoverResult) -> dict[str, Any]:
    """`.status.restore` once the restore Job restored and verified the database."""
    files = result.details.get("filestoreFiles")
    return {
        "database": result.details.get("database"),
        "baseVersion": result.details.get("baseVersion"),
        "filestoreFiles": files if isinstance(files, int) else None,
        "completedAt": cond.now_rfc3339(),
    }


def downloaded_set_status(result: MoverResult, directory: str) -> dict[str, Any]:
    """`.status.download` of an upgraded set (upgrade/request): the dump's and the report's
    paths inside the volume, the file count, and the digest of its SHA256SUMS."""

    def inside(name: Any) -> str | None:
        # Names inside the set, as the mover reported them: one path segment each.
        if not isinstance(name, str) or not name or ".." in name.split("/"):
            return None
        return posixpath.join(directory, name)

    details = result.details
    files = details.get("files")
    return {
        "path": inside(details.get("dumpPath")) or directory,
        "reportPath": inside(details.get("reportPath")),
        "files": files if isinstance(files, int) else None,
        "bytes": result.bytes or 0,
        "sha256": result.sha256,
        "completedAt": cond.now_rfc3339(),
    }


def log_progress(text: str) -> str | None:
    """The newest non-empty line of a piece of platform log, as `.status.progress` shows it:
    redacted and short."""
    for line in reversed(text.splitlines()):
        shown = redact(line.strip())
        if shown:
            return shown if len(shown) <= LOG_LINE_LIMIT else shown[: LOG_LINE_LIMIT - 1] + "…"
    return None


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
