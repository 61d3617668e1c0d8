"""One blocking HTTP(S) GET of the rest of a part file, received straight into a buffer.

Run in a worker thread by `download_https`. A blocking `http.client` connection reads the
body with `readinto1` straight into the part's aligned buffers (no per-piece objects, no
event-loop trip per socket read); each piece is hashed as it arrives and full buffers are
written past the page cache on a thread of their own (`direct_append.py`), the GIL released
for both: this is what lets a download keep up with `curl -o`. Every byte that arrived before
a connection dropped is kept in the part file, so the next attempt resumes after it.

A bound part (see `binding.py`) is resumed with `If-Range` and the validator the server gave
for its first bytes; a server answering with the whole file (200), or a range of another
version, makes the download start again at byte 0. Redirects are followed on the same
scheme, host and port only.
"""

from __future__ import annotations

import contextlib
import http.client
import re
import socket
import threading
from collections.abc import Callable
from typing import Final
from urllib.parse import urljoin, urlsplit

from odoo_upgrade.platform.client import parse_answer
from odoo_upgrade.platform.errors import PlatformProtocolError, PlatformServerError
from odoo_upgrade.transfer.errors import RemoteRefused, TransferError
from odoo_upgrade.transfer.http_connection import unopened_connection
from odoo_upgrade.transfer.part_file import PartFile

# Progress every 4 MiB: each report wakes the event loop's thread.
REPORT_EVERY: Final = 4 * 1024 * 1024
# Longest silence tolerated while waiting for the answer or the next bytes of the body.
READ_TIMEOUT: Final = 120.0
MAX_REDIRECTS: Final = 20
ERROR_BODY_LIMIT: Final = 64 * 1024
_REDIRECTS: Final = frozenset({301, 302, 303, 307, 308})
_CONTENT_RANGE = re.compile(r"bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)")


class IncompleteDownload(Exception):
    """An attempt ended early; what was received is kept and the next attempt resumes."""


def validator(response: http.client.HTTPResponse) -> str:
    """What to send in `If-Range` to resume this answer's file: its strong ETag, else its
    Last-Modified date; "" when it gave neither (a weak ETag cannot be used in If-Range)."""
    etag = (response.getheader("etag") or "").strip()
    if etag.startswith('"'):
        return etag
    return (response.getheader("last-modified") or "").strip()


def _origin(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of a URL, the port made explicit."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:
        port = None
    return scheme, (parts.hostname or "").lower(), port or (443 if scheme == "https" else 80)


def _shown(origin: tuple[str, str, int]) -> str:
    scheme, host, port = origin
    return f"{scheme}://{f'[{host}]' if ':' in host else host}:{port}"


def checked_redirect(current: str, location: str, first: str) -> str:
    """The URL to follow for `location`; `RemoteRefused` unless it stays on the scheme, host
    and port of `first` (the message names the target's origin, never its path or query)."""
    target = urljoin(current, location)
    wanted, start = _origin(target), _origin(first)
    if wanted == start:
        return target
    if start[0] == "https" and wanted[0] == "http":
        why = "from https to http"
    else:
        why = f"to another host than {_shown(start)}"
    raise RemoteRefused(
        f"download: the server redirected {why} ({_shown(wanted)}); not followed "
        "(redirects are followed on the same scheme, host and port only)"
    )


def content_range(value: str | None) -> tuple[int | None, int | None]:
    """(first byte, total) of a Content-Range header; None where absent or `*`."""
    match = _CONTENT_RANGE.match(value or "")
    if not match:
        return None, None
    first = int(match.group(1)) if match.group(1) else None
    total = int(match.group(3)) if match.group(3) != "*" else None
    return first, total


class RangeGet:
    """GET `url` from `part.size` on and append the body to `part` (blocking; one attempt).

    `report(size, total)` is called after each buffer is stored. `abort()` (from any thread)
    makes `run` return soon by closing the socket under it.
    """

    def __init__(self, url: str, part: PartFile, report: Callable[[int, int | None], None]) -> None:
        self.url = url
        self.part = part
        self.report = report
        self._aborted = threading.Event()
        # The socket of the current request, kept here because http.client hands it over to
        # the response (and forgets it) when the server will close the connection.
        self._socket: socket.socket | None = None
        self._total: int | None = None  # as announced by the current answer
        self._done = False  # the part file was whole already (HTTP 416 at its size)

    def abort(self) -> None:
        self._aborted.set()
        sock = self._socket
        if sock is not None:
            with contextlib.suppress(OSError):
                # At the TCP level (also under TLS): a blocked read returns at once.
                socket.socket.shutdown(sock, socket.SHUT_RDWR)

    def run(self) -> int:
        """Return the total size once the part file holds the whole file.

        Raises `IncompleteDownload` when the attempt ended early (the connection failed or
        dropped, the server restarted the file), `TransferError` for a URL it cannot fetch,
        `PlatformServerError` for 5xx/429, `RemoteRefused` or a `PlatformFailure` for other
        refusals.
        """
        url = self.url
        for _ in range(MAX_REDIRECTS + 1):
            location = self._attempt(url)
            if location is None:
                return self._checked_total()
            url = checked_redirect(url, location, self.url)
        raise RemoteRefused(f"download: more than {MAX_REDIRECTS} redirects")

    def _attempt(self, url: str) -> str | None:
        """One request; the redirect location, or None once the body was received."""
        try:
            connection, target = unopened_connection(urlsplit(url))
        except ValueError as exc:
            raise TransferError(f"download: {exc}") from None
        response: http.client.HTTPResponse | None = None
        part = self.part
        try:
            headers = {"Accept-Encoding": "identity"}
            if part.binding is not None and part.size:
                if part.origin is None or not part.origin.validator:
                    part.restart()  # nothing proves the server still has the same file
                else:
                    headers["If-Range"] = part.origin.validator
            if part.size:
                headers["Range"] = f"bytes={part.size}-"
            try:
                connection.connect()
                self._socket = connection.sock
                if self._aborted.is_set():
                    raise IncompleteDownload("download cancelled")
                connection.sock.settimeout(READ_TIMEOUT)
                connection.request("GET", target, headers=headers)
                response = connection.getresponse()
            except (OSError, http.client.HTTPException) as exc:
                raise IncompleteDownload(f"{type(exc).__name__}: {exc}") from None
            location = response.getheader("location")
            if response.status in _REDIRECTS and location:
                return location
            self._total = self._accept(response)
            self._receive(response)
            return None
        finally:
            self._socket = None
            if response is not None:
                response.close()  # holds the socket when the server closes the connection
            connection.close()

    def _accept(self, response: http.client.HTTPResponse) -> int | None:
        """Check the status against the part file; the announced total size (None: unknown)."""
        part = self.part
        status = response.status
        if status == 416:
            _, total = content_range(response.getheader("content-range"))
            if total is not None and total == part.size and self._same_version(response, total):
                self._done = True
                return total
            refused = part.size
            part.restart()
            raise IncompleteDownload(f"range {refused}- refused (HTTP 416); starting over")
        self._done = False
        if status == 206:
            first, total = content_range(response.getheader("content-range"))
            if first != part.size:
                part.restart()
                raise IncompleteDownload("the server resumed at another offset; starting over")
            if not self._same_version(response, total):
                part.restart()
                raise IncompleteDownload("the server sent a range of another file; starting over")
            return total
        if status == 200:
            if part.size:
                part.restart()  # Range ignored, or If-Range did not match: the whole file.
            length = response.getheader("content-length")
            total = int(length) if length and length.isdigit() else None
            origin = part.new_origin(total, validator(response))
            if origin is not None:
                part.set_origin(origin)  # before the first byte of the body is stored
            return total
        try:
            body = response.read(ERROR_BODY_LIMIT)
        except (OSError, http.client.HTTPException) as exc:
            raise IncompleteDownload(f"HTTP {status}, then {type(exc).__name__}: {exc}") from None
        if status >= 500 or status == 429:
            raise PlatformServerError(f"download: the server answered HTTP {status}")
        # A JSON `failures` answer is the platform's word; anything else is a refusal.
        with contextlib.suppress(PlatformProtocolError):
            parse_answer("download", status, body)
        raise RemoteRefused(f"download: the server answered HTTP {status}")

    def _same_version(self, response: http.client.HTTPResponse, total: int | None) -> bool:
        """For a bound part: the answer is of the file version its bytes came from."""
        origin = self.part.origin
        if self.part.binding is None:
            return True
        if origin is None or total != origin.size:
            return False
        given = validator(response)
        # A 416 may carry no validator; one it carries must match.
        return given == origin.validator or (response.status == 416 and not given)

    def _receive(self, response: http.client.HTTPResponse) -> None:
        """Append the body to the part file, straight from the socket into its buffers."""
        if self._done:
            return
        read_into = _body_reader(response)
        reported = self.part.size
        dropped: Exception | None = None
        # Every byte received is written when the block is left, also when the connection
        # dropped mid-buffer: the next attempt resumes after it.
        with self.part.receiving() as sink:
            while not self._aborted.is_set():
                try:
                    received = read_into(sink.space())
                except (OSError, http.client.HTTPException) as exc:
                    dropped = exc
                    break
                if not received:
                    break
                sink.took(received)
                if sink.received - reported >= REPORT_EVERY:
                    reported = sink.received
                    self.report(reported, self._total)
        self.report(self.part.size, self._total)
        if self._aborted.is_set():
            raise IncompleteDownload("download cancelled")
        if dropped is not None:
            raise IncompleteDownload(
                f"connection lost at {self.part.size} bytes ({type(dropped).__name__}: {dropped})"
            )

    def _checked_total(self) -> int:
        part, total = self.part, self._total
        if total is None:
            return part.size
        if part.size > total:
            part.restart()
            raise IncompleteDownload(
                f"received more than the announced {total} bytes; starting over"
            )
        if part.size < total:
            raise IncompleteDownload(f"connection ended at {part.size} of {total} bytes")
        return total


def _body_reader(response: http.client.HTTPResponse) -> Callable[[memoryview], int]:
    """A `readinto1` for the body: one socket read straight into the caller's buffer.

    `HTTPResponse.readinto` would loop until the buffer is full and lose the bytes of that
    loop if the connection drops; one read at a time keeps them.
    """
    if response.chunked:
        # Rare for files; decode with http.client, which copies once per piece.
        def read_chunked(view: memoryview) -> int:
            data = response.read1(len(view))
            view[: len(data)] = data
            return len(data)

        return read_chunked
    stream = response.fp
    remaining = response.length  # None: until the server closes the connection

    def read_plain(view: memoryview) -> int:
        nonlocal remaining
        if remaining is not None:
            if remaining == 0:
                return 0
            view = view[:remaining]
        received = stream.readinto1(view)
        if remaining is not None:
            remaining -= received
        return received

    return read_plain
