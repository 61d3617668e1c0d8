"""One blocking HTTP(S) POST of a whole file as the request body, sent in large blocks.

Run in a worker thread by `upload_https`. A blocking `http.client` connection sends the file
in 4 MiB blocks read with `readinto` into one reused, page-aligned buffer (`buffers.py`), as
`curl -T` does. The sha256 is computed beside it by an `IdleHash`, on CPU time the send leaves
idle, so the hash does not slow the upload (`idle_hash.py`); it reads ahead of the send, so the
send's reads mostly come from the page cache.
"""

from __future__ import annotations

import contextlib
import http.client
import logging
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

from odoo_upgrade.platform.client import parse_answer
from odoo_upgrade.platform.errors import PlatformNotReached, PlatformUnavailable
from odoo_upgrade.redact import redact
from odoo_upgrade.transfer.buffers import page_aligned
from odoo_upgrade.transfer.errors import SizeMismatch
from odoo_upgrade.transfer.http_connection import unopened_connection
from odoo_upgrade.transfer.idle_hash import IdleHash

log = logging.getLogger("odoo_upgrade.transfer")

BLOCK_SIZE: Final = 4 * 1024 * 1024
# Longest stall tolerated while the platform takes the body.
WRITE_TIMEOUT: Final = 120.0
# After the body is sent the platform may inspect the dump before answering.
ANSWER_TIMEOUT: Final = 900.0
# Once a send failed, how long to wait for an answer the platform may have sent before
# closing (a refusal that did not need the body).
ANSWER_AFTER_SEND_FAILURE_TIMEOUT: Final = 5.0
ANSWER_LIMIT: Final = 1024 * 1024


class UploadCancelled(Exception):
    """`abort()` was called; the caller is being cancelled."""


def _unavailable(stage: str, exc: BaseException) -> PlatformUnavailable:
    # Texts of http.client/ssl errors may carry the host but never the query; redact anyway.
    return PlatformUnavailable(
        redact(f"upload: no usable answer from the platform ({stage}: {type(exc).__name__}: {exc})")
    )


class FilePost:
    """POST the file at `path` (`size` bytes) to `url`; parse the platform's JSON answer.

    `report(sent, size)` is called after each block (from the worker thread). `abort()`, from
    any thread, makes `run` return soon by closing the socket under it.
    """

    def __init__(
        self, url: str, path: Path, size: int, report: Callable[[int, int | None], None]
    ) -> None:
        self.url = url
        self.path = path
        self.size = size
        self.report = report
        self._aborted = threading.Event()
        self._socket: socket.socket | None = None

    def abort(self) -> None:
        self._aborted.set()
        sock = self._socket
        if sock is not None:
            with contextlib.suppress(OSError):
                # At the TCP level (also under TLS): a blocked send or read returns at once.
                socket.socket.shutdown(sock, socket.SHUT_RDWR)

    def run(self) -> str:
        """Send the file; its sha256 once the platform accepted it.

        Raises `PlatformNotReached` (no connection), `PlatformUnavailable` (the connection
        failed or dropped: the whole file must be sent again), the errors of `parse_answer`
        for the platform's answer, `SizeMismatch` if the file's size or modification time
        changed while it was being sent.
        """
        connection, target = unopened_connection(urlsplit(self.url))
        response: http.client.HTTPResponse | None = None
        try:
            try:
                connection.connect()
            except (OSError, http.client.HTTPException) as exc:
                raise PlatformNotReached(
                    redact(f"upload: could not reach the platform ({type(exc).__name__}: {exc})")
                ) from None
            self._socket = connection.sock
            self._raise_if_aborted()
            connection.sock.settimeout(WRITE_TIMEOUT)
            # Started once the platform answers: an unreachable one costs no reads.
            with IdleHash(self.path) as idle:
                send_failure = self._send(connection, target)
                connection.sock.settimeout(
                    ANSWER_TIMEOUT if send_failure is None else ANSWER_AFTER_SEND_FAILURE_TIMEOUT
                )
                try:
                    response = connection.getresponse()
                    body = response.read(ANSWER_LIMIT)
                except (OSError, http.client.HTTPException) as exc:
                    self._raise_if_aborted()
                    raise _unavailable(
                        "sending" if send_failure else "answer", send_failure or exc
                    ) from None
                self._raise_if_aborted()
                # As httpx logs the other calls (the query holds the key: redacted).
                log.info(
                    'HTTP Request: POST %s "HTTP/1.1 %d %s"',
                    redact(self.url),
                    response.status,
                    response.reason,
                )
                parse_answer("upload", response.status, body)
                if send_failure is not None:
                    # An answer without failures to a body that did not arrive whole.
                    raise _unavailable("sending", send_failure)
                return idle.finish(self.size)
        finally:
            self._socket = None
            if response is not None:
                response.close()
            connection.close()

    def _raise_if_aborted(self) -> None:
        if self._aborted.is_set():
            raise UploadCancelled("upload cancelled")

    def _send(self, connection: http.client.HTTPConnection, target: str) -> BaseException | None:
        """Headers and body; None, or the error if the connection failed."""
        buffer = page_aligned(BLOCK_SIZE)
        with self.path.open("rb", buffering=0) as file:
            try:
                connection.putrequest("POST", target, skip_accept_encoding=True)
                connection.putheader("Content-Type", "application/octet-stream")
                connection.putheader("Content-Length", str(self.size))
                connection.endheaders()
            except (OSError, http.client.HTTPException) as exc:
                self._raise_if_aborted()
                return exc
            sent = 0
            while sent < self.size:
                self._raise_if_aborted()
                filled = file.readinto(buffer[: min(BLOCK_SIZE, self.size - sent)])
                if not filled:
                    raise SizeMismatch(
                        f"upload: {self.path.name} changed while being sent "
                        f"({sent} of {self.size} bytes)"
                    )
                try:
                    connection.send(buffer[:filled])
                except (OSError, http.client.HTTPException) as exc:
                    self._raise_if_aborted()
                    return exc
                sent += filled
                self.report(sent, self.size)
        return None
