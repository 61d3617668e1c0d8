"""Fault injection: 5xx answers, connections cut once mid-transfer, slow answers, slow links."""

from __future__ import annotations

import asyncio
import random
import threading
import time

from odoo_upgrade.emulator.config import EmulatorConfig


class FaultInjector:
    """Decides, per API call and per transfer, whether to misbehave (`--fail-rate`, ...)."""

    def __init__(self, config: EmulatorConfig) -> None:
        self._fail_rate = config.fail_rate
        self._drop_after = config.drop_after_bytes
        self.latency = config.latency
        self._bandwidth = config.bandwidth
        self._random = random.Random(config.fault_seed)
        self._lock = threading.Lock()
        self._dropped: set[tuple[int, str]] = set()

    def should_fail_call(self) -> bool:
        """True when this API call must be answered `SERVER:ERROR` (before acting on it)."""
        if self._fail_rate <= 0:
            return False
        with self._lock:
            return self._random.random() < self._fail_rate

    def drop_point(self, request_id: int, transfer: str) -> int | None:
        """Bytes after which this connection of `transfer` must be cut, or None.

        Each (request, transfer) is cut once: the retry that follows goes through, so that
        clients' resume and retry logic is exercised rather than defeated.
        """
        if self._drop_after is None:
            return None
        with self._lock:
            if (request_id, transfer) in self._dropped:
                return None
        return self._drop_after

    def mark_dropped(self, request_id: int, transfer: str) -> None:
        """Record that `transfer` of `request_id` was cut, so that the next attempt is not."""
        with self._lock:
            self._dropped.add((request_id, transfer))

    def pace_seconds(self, size: int) -> float:
        """How long receiving `size` bytes takes on the `--bandwidth` link (0 without one)."""
        return size / self._bandwidth if self._bandwidth else 0.0

    async def pace(self, size: int) -> None:
        """Wait as long as `size` bytes take on the slow link (HTTP handlers)."""
        if self._bandwidth:
            await asyncio.sleep(self.pace_seconds(size))

    def pace_blocking(self, size: int) -> None:
        """The same for the SFTP server's threads."""
        if self._bandwidth:
            time.sleep(self.pace_seconds(size))
