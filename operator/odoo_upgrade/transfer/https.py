"""HTTPS upload (whole file, whole retry) and download (Range resume) of dumps."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Protocol, TypeVar
from urllib.parse import urlencode

from odoo_upgrade.platform.client import (
    checked_base_url,
    is_transient,
)
from odoo_upgrade.platform.errors import (
    PlatformError,
    PlatformFailure,
    PlatformServerError,
)
from odoo_upgrade.platform.retry import RetryPolicy, retry_async
from odoo_upgrade.redact import redact, register_secret
from odoo_upgrade.transfer.binding import DownloadBinding
from odoo_upgrade.transfer.errors import SizeMismatch, TransferUnavailable
from odoo_upgrade.transfer.file_post import FilePost
from odoo_upgrade.transfer.part_file import PartFile, published_download
from odoo_upgrade.transfer.range_get import IncompleteDownload, RangeGet
from odoo_upgrade.transfer.results import ProgressCallback, TransferResult

log = logging.getLogger("odoo_upgrade.transfer")

T = TypeVar("T", covariant=True)


class BlockingTransfer(Protocol[T]):
    """A transfer that runs blocking in a worker thread and can be stopped from another one."""

    def run(self) -> T: ...

    def abort(self) -> None: ...


async def run_in_worker(
    make: Callable[[ProgressCallback], BlockingTransfer[T]], progress: ProgressCallback | None
) -> T:
    """Run a blocking transfer in a worker thread, reporting progress on the loop's thread.

    If this coroutine is cancelled, the transfer is aborted (its socket closed) and waited for,
    so that nothing it writes to (a part file) is closed under its feet.
    """
    loop = asyncio.get_running_loop()

    def report(done: int, total: int | None) -> None:
        if progress is not None:
            loop.call_soon_threadsafe(progress, done, total)

    transfer = make(report)
    running = asyncio.ensure_future(asyncio.to_thread(transfer.run))
    try:
        return await asyncio.shield(running)
    except asyncio.CancelledError:
        transfer.abort()
        with contextlib.suppress(Exception):
            await running
        raise


async def _upload_once(url: str, source: Path, size: int, progress: ProgressCallback | None) -> str:
    """One POST of the whole file; its sha256 once the platform took it."""
    return await run_in_worker(lambda report: FilePost(url, source, size, report), progress)


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

    The body goes in 4 MiB blocks over a blocking `http.client` connection in a worker thread
    (`transfer/file_post.py`); `progress` is called on the event loop's thread.

    The platform cannot resume an HTTP upload, so a transient failure resends the whole file.
    Raises `PlatformFailure` for failures in the answer, `PlatformUnavailable` when the
    attempts run out.
    """
    register_secret(key)
    source = Path(path)
    size = (await asyncio.to_thread(source.stat)).st_size
    query = urlencode({"request": str(request_id), "key": key})
    url = f"{checked_base_url(base_url)}/database/v1/upload?{query}"

    async def once() -> str:
        try:
            return await _upload_once(url, source, size, progress)
        finally:
            log.debug("platform upload request=%s", request_id)

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
    """One GET from `part.size` on; the total size once complete."""
    return await run_in_worker(lambda report: RangeGet(url, part, report), progress)


async def download_https(
    url: str,
    destination: str | os.PathLike[str],
    *,
    progress: ProgressCallback | None = None,
    retry: RetryPolicy | None = None,
    expected_size: int | None = None,
    binding: DownloadBinding | None = None,
) -> TransferResult:
    """Download `url` to `destination` with Range resume; never overwrite an existing file.

    Bytes go to `.<name>.part` beside the destination (kept across crashes and resumed by a
    rerun), then the size is checked, the file fsynced, linked under its final name, and
    `<destination>.sha256` written. `retry.attempts` bounds consecutive attempts that make no
    progress; an attempt that moved forward resumes at once. Redirects are followed on the
    same scheme, host and port only (`RemoteRefused` otherwise).

    With a `binding`, a part is continued only if it was written for the same request from
    the same URL, and only with `If-Range` and the validator the server gave (else the
    download starts at byte 0); a destination this request already published is recognised
    (`published_download`) and its result returned instead of `DestinationExists`. Without
    one (the CLI today), any part is continued.
    """
    policy = retry or RetryPolicy()
    if binding is not None:
        done = await asyncio.to_thread(published_download, destination, binding)
        if done is not None and (expected_size is None or done.bytes == expected_size):
            return done
    part = await asyncio.to_thread(
        functools.partial(PartFile.open, destination, binding=binding, source=url)
    )
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
        digest = await asyncio.to_thread(functools.partial(part.finish, total, attempts=attempts))
    finally:
        part.close()
    return TransferResult(bytes=total, sha256=digest, attempts=attempts)
