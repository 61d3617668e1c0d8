"""HTTPS upload (streamed body, whole retry) and download (Range resume) of dumps."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
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
    PlatformServerError,
)
from odoo_upgrade.platform.retry import RetryPolicy, retry_async
from odoo_upgrade.redact import redact, register_secret
from odoo_upgrade.transfer.errors import SizeMismatch, TransferUnavailable
from odoo_upgrade.transfer.part_file import PartFile
from odoo_upgrade.transfer.range_get import IncompleteDownload, RangeGet
from odoo_upgrade.transfer.results import ProgressCallback, TransferResult

log = logging.getLogger("odoo_upgrade.transfer")

# 1 MiB chunks: per-chunk Python work stays negligible, memory stays small (two in flight,
# and glibc keeps freed buffers of threads' arenas: bigger chunks raise peak RSS).
CHUNK = 1024 * 1024
# After the body is sent the platform may inspect the dump before answering.
UPLOAD_TIMEOUT = httpx.Timeout(connect=15.0, read=900.0, write=120.0, pool=15.0)


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


async def _download_once(url: str, part: PartFile, progress: ProgressCallback | None) -> int:
    """One GET from `part.size` on, in a worker thread; the total size once complete.

    Progress is reported on the event loop's thread, as the callers expect. If this coroutine
    is cancelled, the thread is stopped and waited for before the part file may be closed.
    """
    loop = asyncio.get_running_loop()

    def report(done: int, total: int | None) -> None:
        if progress is not None:
            loop.call_soon_threadsafe(progress, done, total)

    request = RangeGet(url, part, report)
    running = asyncio.ensure_future(asyncio.to_thread(request.run))
    try:
        return await asyncio.shield(running)
    except asyncio.CancelledError:
        request.abort()
        with contextlib.suppress(Exception):
            await running
        raise


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
        while True:
            attempts += 1
            before = part.size
            try:
                total = await _download_once(url, part, progress)
                break
            except (IncompleteDownload, PlatformError) as exc:
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
