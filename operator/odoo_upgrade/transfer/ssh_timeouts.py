"""Bounds on every SSH/SFTP step, so that a server that stalls never hangs a transfer.

paramiko has timeouts for some steps only (none for a subsystem request, an hour for a
channel open); `StepDeadline` bounds any step by closing the transport under it.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from types import TracebackType

import paramiko

from odoo_upgrade.transfer.errors import TransferUnavailable


@dataclass(frozen=True)
class SshTimeouts:
    """Seconds allowed for one step: `connect` for TCP, banner, key exchange, authentication,
    channel and SFTP start; `operation` for each SFTP request and each wait for window."""

    connect: float = 15.0
    operation: float = 60.0

    def __post_init__(self) -> None:
        if self.connect <= 0 or self.operation <= 0:
            raise ValueError("SSH timeouts must be positive seconds")


class StepDeadline:
    """`with StepDeadline(transport, seconds, "authenticating", "host:port"):` — if the step
    is not done in time, the transport is closed (which ends any paramiko wait at once) and
    the step fails with a transient `TransferUnavailable` naming it."""

    def __init__(self, transport: paramiko.Transport, seconds: float, what: str, where: str):
        self.transport = transport
        self.seconds = seconds
        self.what = what
        self.where = where
        self.expired = False
        self._done = False
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def _expire(self) -> None:
        with self._lock:
            if self._done:
                return
            self.expired = True
        self.transport.close()

    def __enter__(self) -> StepDeadline:
        self._timer.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        with self._lock:
            self._done = True
        self._timer.cancel()
        if self.expired:
            # Also when the step returned just then: the transport is closed under it.
            raise TransferUnavailable(
                f"SFTP server {self.where} did not answer within {self.seconds:g} s "
                f"({self.what}); timed out"
            ) from None
