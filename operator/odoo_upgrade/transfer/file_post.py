"""One blocking HTTP(S) POST of a whole file as the request body, sent in large blocks.

Run in a worker thread by `upload_https`. A blocking `http.client` connection sends the file
in 4 MiB blocks read with `readinto` into two reused, page-aligned buffers (`buffers.py`); a
second thread hashes each block while this one sends it and reads the next (`hashlib`,
`readinto` and `sendall` all release the GIL), so neither the hash, the disk's latency nor
per-piece event-loop work slows the upload below `curl -T`.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import logging
import socket
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

from odoo_upgrade.platform.client import parse_answer
from odoo_upgrade.platform.errors import PlatformNotReached, PlatformUnavailable
from odoo_upgrade.redact import redact
from odoo_upgrade.transfer.buffers import page_aligned
from odoo_upgrade.transfer.errors import SizeMismatch
from odoo_upgrade.transfer.http_connection import unopened_connection

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
        """Send the file; the sha256 of what was sent once the platform accepted it.

        Raises `PlatformNotReached` (no connection), `PlatformUnavailable` (the connection
        failed or dropped: the whole file must be sent again), the errors of `parse_answer`
        for the platform's answer, `SizeMismatch` if the file shrank while being sent.
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
            digest, send_failure = self._send(connection, target)
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
            return digest
        finally:
            self._socket = None
            if response is not None:
                response.close()
            connection.close()

    def _raise_if_aborted(self) -> None:
        if self._aborted.is_set():
            raise UploadCancelled("upload cancelled")

    def _send(
        self, connection: http.client.HTTPConnection, target: str
    ) -> tuple[str, BaseException | None]:
        """Headers and body; (sha256, None), or ("", the error) if the connection failed.

        Two buffers: while a helper thread hashes one block, this thread sends it and reads
        the next block into the other buffer (whose block the helper hashed before), so
        neither the hash nor a source volume's read latency (network block storage) is added
        to each block's send.
        """
        hasher = hashlib.sha256()
        buffers = (page_aligned(BLOCK_SIZE), page_aligned(BLOCK_SIZE))
        # Leaving the block waits for the helper: it may still be hashing a buffer.
        with self.path.open("rb", buffering=0) as file, ThreadPoolExecutor(1) as helper:
            try:
                connection.putrequest("POST", target, skip_accept_encoding=True)
                connection.putheader("Content-Type", "application/octet-stream")
                connection.putheader("Content-Length", str(self.size))
                connection.endheaders()
            except (OSError, http.client.HTTPException) as exc:
                self._raise_if_aborted()
                return "", exc
            sent, index = 0, 0
            hashed: Future[None] | None = None
            while sent < self.size:
                self._raise_if_aborted()
                if hashed is not None:
                    hashed.result()  # the block this buffer held was hashed
                filled = file.readinto(buffers[index][: min(BLOCK_SIZE, self.size - sent)])
                if not filled:
                    raise SizeMismatch(
                        f"upload: {self.path.name} changed while being sent "
                        f"({sent} of {self.size} bytes)"
                    )
                block = buffers[index][:filled]
                hashed = helper.submit(hasher.update, block)
                try:
                    connection.send(block)
                except (OSError, http.client.HTTPException) as exc:
                    self._raise_if_aborted()
                    return "", exc
                sent += filled
                self.report(sent, self.size)
                index = 1 - index
        return hasher.hexdigest(), None
