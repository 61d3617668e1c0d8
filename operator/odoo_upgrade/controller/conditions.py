"""`metav1.Condition`-style conditions and the phase, as pure functions over status dicts.

`lastTransitionTime` moves only when a condition's status flips, so that `kubectl describe`
tells when something actually changed, not when the operator last looked.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from typing import Any

DUMPED = "Dumped"
REQUEST_CREATED = "RequestCreated"
UPLOADED = "Uploaded"
PROCESSED = "Processed"
DOWNLOADED = "Downloaded"
RESTORED = "Restored"
READY = "Ready"
CONDITION_TYPES = (DUMPED, REQUEST_CREATED, UPLOADED, PROCESSED, DOWNLOADED, RESTORED, READY)

PENDING = "Pending"
DUMPING = "Dumping"
CREATING = "Creating"
UPLOADING = "Uploading"
PROCESSING = "Processing"
DOWNLOADING = "Downloading"
RESTORING = "Restoring"
SUCCEEDED = "Succeeded"
FAILED = "Failed"
PHASES = (
    PENDING,
    DUMPING,
    CREATING,
    UPLOADING,
    PROCESSING,
    DOWNLOADING,
    RESTORING,
    SUCCEEDED,
    FAILED,
)
TERMINAL_PHASES = frozenset({SUCCEEDED, FAILED})

TRUE = "True"
FALSE = "False"
UNKNOWN = "Unknown"


def now_rfc3339() -> str:
    """The current time as Kubernetes writes it (seconds, UTC, `Z`)."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def find_condition(conditions: Sequence[Mapping[str, Any]], type_: str) -> Mapping[str, Any] | None:
    """The condition of `type_`, if present."""
    return next((c for c in conditions if c.get("type") == type_), None)


def is_true(conditions: Sequence[Mapping[str, Any]], type_: str) -> bool:
    found = find_condition(conditions, type_)
    return found is not None and found.get("status") == TRUE


def set_condition(
    conditions: Sequence[Mapping[str, Any]],
    type_: str,
    status: str,
    reason: str,
    message: str,
    *,
    generation: int | None,
    now: str | None = None,
) -> list[dict[str, Any]]:
    """A new condition list with `type_` set; other conditions are kept as they are.

    The list stays in the flow's order (RequestCreated … Ready) so that it reads like the flow.
    """
    if status not in (TRUE, FALSE, UNKNOWN):
        raise ValueError(f"condition status must be True, False or Unknown, got {status!r}")
    previous = find_condition(conditions, type_)
    flipped = previous is None or previous.get("status") != status
    updated: dict[str, Any] = {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": (
            (now or now_rfc3339())
            if flipped or previous is None
            else previous.get("lastTransitionTime") or (now or now_rfc3339())
        ),
    }
    if generation is not None:
        updated["observedGeneration"] = generation
    others = [dict(c) for c in conditions if c.get("type") != type_]
    merged = [*others, updated]
    order = {t: i for i, t in enumerate(CONDITION_TYPES)}
    return sorted(merged, key=lambda c: order.get(str(c.get("type")), len(order)))
