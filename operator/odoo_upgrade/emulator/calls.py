"""The record of API calls: `calls.jsonl` in the data dir and one log line each, never a secret."""

from __future__ import annotations

import json
import logging
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

log = logging.getLogger("odoo_upgrade.emulator.calls")


class CallLog:
    """Appends `{"ts", "method", "request", "ok", "status", "reasons"}` per API call."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / "calls.jsonl"
        self._lock = threading.Lock()

    def record(
        self,
        method: str,
        request_id: int | None,
        status: int,
        answer: dict[str, Any],
        *,
        extra: dict[str, Any] | None = None,
    ) -> None:
        """Log one answered call. Only the method, request id and failure reasons are kept
        (and `extra` fields, such as the bytes of an rsync session or the Host asked)."""
        reasons = [str(f.get("reason")) for f in answer.get("failures") or []]
        entry = {
            "ts": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "method": method,
            "request": request_id,
            "ok": not reasons,
            "status": status,
            "reasons": reasons,
            **(extra or {}),
        }
        with self._lock, self.path.open("a") as stream:
            stream.write(json.dumps(entry) + "\n")
        log.info(
            "%s request=%s status=%s ok=%s%s",
            method,
            request_id if request_id is not None else "-",
            status,
            str(not reasons).lower(),
            f" reasons={','.join(reasons)}" if reasons else "",
        )
