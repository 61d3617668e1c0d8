"""HTTPS upload (streamed body, whole retry) and download (Range resume) of dumps."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import BinaryIO

import httpx

from odoo_upgrade.platform.client import (
    checked_base_url,
    is_transient,
    parse_answer,
    transport_error,
)
from odoo_upgrade.platform.errors import (
    PlatformError,
    PlatformFailure,
    PlatformProtocolError,
    PlatformServerError,
)
from odoo_upgrade.platform.retry import RetryPolicy, retry_async
from odoo_upgrade.redact import redact, register_secret
from odoo_upgrade.transfer.errors import RemoteRefused, SizeMismatch, TransferUnavailable
from odoo_upgrade.transfer.part_file import PartFile
from odoo_upgrade.transfer.results import ProgressCallback, TransferResult

log = logging.getLogger("odoo_upgrade.transfer")

# 1 MiB chunks: per-chunk Python work stays negligible, memory stays small (two in flight,
# and glibc keeps freed buffers of threads' arenas: bigger chunks raise peak RSS).
CHUNK = 1024 * 1024
# After the body is sent the platform may inspect the dump before answering.
UPLOAD_TIMEOUT = httpx.Timeout(connect=15.0, read=900.0, write=120.0, pool=15.0)
DOWNLOAD_TIMEOUT = httpx.Timeout(connect=15.0, read=120.0, write=60.0, pool=15.0)

_CONTENT_RANGE = re.compile(r"bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)")


def _hash_and_read(hasher: hashlib._Hash, chunk: bytes, file: BinaryIO, size: int) -> bytes:
    hasher.update(chunk)
    return file.read(size)


async def _file_body(
    path: Path, size: int, hasher: hashlib._Hash, progress: ProgressCallback | None
) -> AsyncIterator[bytes]:
    """The file in CHUNK pieces; hashing one and reading the next overlap its sending."""
    sent = 0
    file = await asyncio.to_thread(open, path, "rb")
    ahead: asyncio.Future[bytes] | None = None
    try:
        chunk = await asyncio.to_thread(file.read, min(CHUNK, size))
        while chunk:
            next_size = min(CHUNK, size - sent - len(chunk))
            ahead = asyncio.ensure_future(
                asyncio.to_thread(_hash_and_read, hasher, chunk, file, next_size)
            )
            yield chunk
            sent += len(chunk)
            if progress:
                progress(sent, size)
            chunk = await ahead
            ahead = None
    finally:
        # The thread may still be reading: let it finish before the file closes.
        if ahead is not None:
            with contextlib.suppress(Exception):
                await ahead
        file.close()
    if sent != size:
        raise SizeMismatch(f"upload: {path} changed while being sent ({sent} of {size} bytes)")


async def upload_https(
    base_url: str,
    request_id: int,
    key: str,
    path: str | os.PathLike[str],
    *,
    progress: ProgressCallback | None = None,
    retry: RetryPolicy | None = None,
) -> TransferResult:
    """POST the dump to `<base>/database/v1/upload`, streamed from disk in constant memory.

    The platform cannot resume an HTTP upload, so a transient failure resends the whole file.
    Raises `PlatformFailure` for failures in the answer, `PlatformUnavailable` when the
    attempts run out.
    """
    register_secret(key)
    source = Path(path)
    size = (await asyncio.to_thread(source.stat)).st_size
    url = f"{checked_base_url(base_url)}/database/v1/upload"
    params = {"request": str(request_id), "key": key}
    headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}

    async with httpx.AsyncClient(timeout=UPLOAD_TIMEOUT) as http:

        async def once() -> str:
            hasher = hashlib.sha256()
            try:
                response = await http.post(
                    url,
                    params=params,
                    headers=headers,
                    content=_file_body(source, size, hasher, progress),
                )
            except httpx.TransportError as exc:
                raise transport_error("upload", exc) from None
            finally:
                log.debug("platform upload request=%s", request_id)
            parse_answer("upload", response.status_code, response.content)
            return hasher.hexdigest()

        policy = retry or RetryPolicy()
        try:
            digest, attempts = await retry_async(policy, once, retryable=is_transient)
        except PlatformFailure as exc:
            if exc.transient:
                raise PlatformServerError(
                    f"{exc} (still failing after {policy.attempts} attempts)"
                ) from None
            raise
    return TransferResult(bytes=size, sha256=digest, attempts=attempts)


def _content_range(value: str | None) -> tuple[int | None, int | None]:
    """(first byte, total) of a Content-Range header; None where absent or `*`."""
    match = _CONTENT_RANGE.match(value or "")
    if not match:
        return None, None
    first = int(match.group(1)) if match.group(1) else None
    total = int(match.group(3)) if match.group(3) != "*" else None
    return first, total


class _Resumable(Exception):
    """An attempt ended early but what was received is kept; the next one resumes."""


async def _receive(
    response: httpx.Response, part: PartFile, total: int | None, progress: ProgressCallback | None
) -> None:
    """Append the body to the part file, writing and hashing in a thread while receiving."""
    batch: list[bytes] = []
    batched = 0
    writing: asyncio.Future[None] | None = None

    def write(data: bytes) -> None:
        part.append(data)

    try:
        async for piece in response.aiter_raw():
            batch.append(piece)
            batched += len(piece)
            if batched >= CHUNK:
                if writing is not None:
                    await writing
                    if progress:
                        progress(part.size, total)
                writing = asyncio.ensure_future(asyncio.to_thread(write, b"".join(batch)))
                batch, batched = [], 0
    finally:
        # Keep every byte received, also when the connection dropped mid-body.
        if writing is not None:
            await writing
        if batch:
            part.append(b"".join(batch))
        if progress:
            progress(part.size, total)


async def _download_once(
    http: httpx.AsyncClient,
    url: str,
    part: PartFile,
    progress: ProgressCallback | None,
) -> int:
    """One GET from `part.size` on; return the total size when the file is complete."""
    headers = {"Accept-Encoding": "identity"}
    if part.size:
        headers["Range"] = f"bytes={part.size}-"
    async with http.stream("GET", url, headers=headers) as response:
        status = response.status_code
        if status == 416:
            _, total = _content_range(response.headers.get("content-range"))
            if total is not None and total == part.size:
                return total
            part.restart()
            raise _Resumable(f"range {part.size}- refused (HTTP 416); starting over")
        if status == 206:
            first, total = _content_range(response.headers.get("content-range"))
            if first != part.size:
                part.restart()
                raise _Resumable("the server resumed at another offset; starting over")
        elif status == 200:
            if part.size:
                part.restart()  # Range ignored: the whole file comes again.
            length = response.headers.get("content-length")
            total = int(length) if length and length.isdigit() else None
        else:
            body = await response.aread()
            if status >= 500 or status == 429:
                raise PlatformServerError(f"download: the server answered HTTP {status}")
            # A JSON `failures` answer is the platform's word; anything else is a refusal.
            with contextlib.suppress(PlatformProtocolError):
                parse_answer("download", status, body)
            raise RemoteRefused(f"download: the server answered HTTP {status}")
        await _receive(response, part, total, progress)
    if total is None:
        return part.size
    if part.size > total:
        part.restart()
        raise _Resumable(f"received more than the announced {total} bytes; starting over")
    if part.size < total:
        raise _Resumable(f"connection ended at {part.size} of {total} bytes")
    return total


async def download_https(
    url: str,
    destination: str | os.PathLike[str],
    *,
    progress: ProgressCallback | None = None,
    retry: RetryPolicy | None = None,
    expected_size: int | None = None,
) -> TransferResult:
    """Download `url` to `destination` with Range resume; never overwrite an existing file.

    Bytes go to `.<name>.part` beside the destination (kept across crashes and resumed by a
    rerun), then the size is checked, the file fsynced, linked under its final name, and
    `<destination>.sha256` written. `retry.attempts` bounds consecutive attempts that make no
    progress; an attempt that moved forward resumes at once.
    """
    policy = retry or RetryPolicy()
    part = await asyncio.to_thread(PartFile.open, destination)
    attempts = 0
    stalled = 0
    try:
        async with httpx.AsyncClient(timeout=DOWNLOAD_TIMEOUT, follow_redirects=True) as http:
            while True:
                attempts += 1
                before = part.size
                try:
                    total = await _download_once(http, url, part, progress)
                    break
                except (httpx.TransportError, _Resumable, PlatformError) as exc:
                    if isinstance(exc, PlatformError) and not is_transient(exc):
                        raise
                    reason = redact(f"{type(exc).__name__}: {exc}")
                    stalled = 0 if part.size > before else stalled + 1
                    log.debug("download attempt %d ended: %s", attempts, reason)
                    if stalled >= policy.attempts:
                        raise TransferUnavailable(
                            f"download of {Path(destination).name} failed {stalled} times in a "
                            f"row without progress ({reason}); {part.size} bytes kept in "
                            f"{part.path.name} for a later resume"
                        ) from None
                    await asyncio.sleep(policy.delay_before(stalled + 1) if stalled else 0.0)
        if expected_size is not None and total != expected_size:
            part.discard()
            raise SizeMismatch(
                f"download of {Path(destination).name}: the server announced {total} bytes, "
                f"expected {expected_size}"
            )
        digest = await asyncio.to_thread(part.finish, total)
    finally:
        part.close()
    return TransferResult(bytes=total, sha256=digest, attempts=attempts)
