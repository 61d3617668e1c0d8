"""What a mover Job reports, and how its failures are named.

The mover writes its result as JSON to the pod's termination message; the operator reads it
back from the pod status. The mover decides whether a failure is transient (a later attempt
may succeed); the operator takes that flag as it is — one source of truth.

    {"bytes": n, "sha256": hex, "attempts": n, "transport": t, ...}        success
    {"error": "...", "reason": "...", "transient": bool, "failures": [...]} failure
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Direction(StrEnum):
    """What a mover Job does; also the suffix of its Job name (`<name>-upload`, ...)."""

    CHECK = "check"  # pre-flight of the databases and the filestore: changes nothing
    DUMP = "dump"
    UPLOAD = "upload"
    DOWNLOAD = "download"
    RESTORE = "restore"


# Exit codes of a mover: 1 when another pod may succeed at once (the Job retries), 2 when
# another pod would fail the same way (the Job's podFailurePolicy fails the Job at once).
EXIT_RETRY_POD = 1
EXIT_PERMANENT = 2

# Reasons the operator acts on by name (all others are shown as they are).
SOURCE_NOT_FOUND = "SourceNotFound"
DESTINATION_EXISTS = "DestinationExists"
NOT_READY = "NotReady"
MOVER_CRASHED = "MoverCrashed"
NO_RESULT = "NoResult"
INTERRUPTED = "Interrupted"
# The mover did not understand its arguments: an operator newer than its mover image.
ARGUMENTS_REJECTED = "MoverArgumentsRejected"

# The kubelet keeps at most 4096 bytes of a termination message.
TERMINATION_MESSAGE_LIMIT = 4000


@dataclass(frozen=True)
class MoverResult:
    """A mover's outcome: the transfer's figures on success, reason and flag on failure."""

    succeeded: bool
    bytes: int | None = None
    sha256: str | None = None
    attempts: int | None = None
    transport: str | None = None
    path: str | None = None
    host_key: str | None = None  # seen on first use, for the operator to pin from now on
    reason: str = ""
    error: str = ""
    transient: bool = False
    failures: list[dict[str, Any]] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)  # direction-specific figures

    @classmethod
    def failure(
        cls,
        reason: str,
        error: str,
        *,
        transient: bool,
        failures: list[dict[str, Any]] | None = None,
        host_key: str | None = None,
    ) -> MoverResult:
        return cls(
            False,
            reason=reason,
            error=error,
            transient=transient,
            failures=list(failures or []),
            host_key=host_key,
        )

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = dict(self.details)
        if self.succeeded:
            for name in ("bytes", "sha256", "attempts", "transport", "path"):
                if getattr(self, name) is not None:
                    data[name] = getattr(self, name)
        else:
            data.update(error=self.error, reason=self.reason, transient=self.transient)
            if self.failures:
                data["failures"] = list(self.failures)
        if self.host_key:
            data["hostKey"] = self.host_key
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> MoverResult:
        """Read a termination message; a result with `reason` is a failure."""
        known = {"bytes", "sha256", "attempts", "transport", "path", "hostKey", "reason",
                 "error", "transient", "failures"}  # fmt: skip
        details = {k: v for k, v in data.items() if k not in known}
        host_key = str(data["hostKey"]) if data.get("hostKey") else None
        if data.get("reason"):
            failures = [f for f in data.get("failures") or [] if isinstance(f, dict)]
            return cls(
                False,
                reason=str(data["reason"]),
                error=str(data.get("error") or data["reason"]),
                transient=data.get("transient") is True,
                failures=failures,
                host_key=host_key,
                details=details,
            )
        return cls(
            True,
            bytes=_int(data.get("bytes")),
            sha256=str(data["sha256"]) if data.get("sha256") else None,
            attempts=_int(data.get("attempts")),
            transport=str(data["transport"]) if data.get("transport") else None,
            path=str(data["path"]) if data.get("path") else None,
            host_key=host_key,
            details=details,
        )

    @classmethod
    def from_termination_message(cls, message: str) -> MoverResult:
        """The result from a pod's termination message.

        With `FallbackToLogsOnError` a mover that died before writing its result leaves the
        log's tail instead: a crash, which a new attempt may not repeat.
        """
        try:
            parsed = json.loads(message)
        except ValueError:
            parsed = None
        if not isinstance(parsed, dict):
            return cls.failure(MOVER_CRASHED, message.strip()[-500:], transient=True)
        return cls.from_json(parsed)


NO_RESULT_YET = MoverResult.failure(
    NO_RESULT, "the mover ended without writing a result", transient=True
)


def _int(value: Any) -> int | None:
    return int(value) if isinstance(value, int | str) and str(value).isdigit() else None


def termination_text(result: MoverResult) -> str:
    """The JSON written to the termination message, cut to fit the kubelet's limit.

    The caller redacts it (this module knows no secrets)."""
    data = result.to_json()
    text = json.dumps(data, sort_keys=True)
    if len(text.encode()) > TERMINATION_MESSAGE_LIMIT:
        data.pop("failures", None)
        data["error"] = str(data.get("error", ""))[:1000]
        text = json.dumps(data, sort_keys=True)[:TERMINATION_MESSAGE_LIMIT]
    return text
