"""`odoo-upgrade mover upload|download`: the entrypoint of the mover Jobs.

A mover knows nothing of kopf or the Kubernetes API (its pod has no token). It reads the request
from the files of the mounted request Secret, moves one dump with `odoo_upgrade.transfer`, prints
progress lines to its log, and reports its result as JSON in the termination message:

    {"bytes": n, "sha256": hex, "attempts": n, "transport": t}     success, exit 0
    {"error": "...", "reason": "..."}                              failure, exit 1 or 2

Exit 1: another pod may succeed (network, platform unavailable); the Job retries.
Exit 2: another pod would fail the same way (source missing, destination exists, refused by
the platform); the Job's podFailurePolicy fails the Job at once and the operator decides.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import click

from odoo_upgrade.platform import PlatformError, PlatformFailure, SftpAccess
from odoo_upgrade.platform.client import PlatformClient
from odoo_upgrade.redact import install_log_redaction, redact, register_secret
from odoo_upgrade.transport import DEFAULT_SFTP_THRESHOLD_BYTES

EXIT_TRANSIENT = 1
EXIT_PERMANENT = 2
TERMINATION_MESSAGE_LIMIT = 4000  # the kubelet keeps at most 4096 bytes
PROGRESS_EVERY_SECONDS = 2.0

SOURCE_NOT_FOUND = "SourceNotFound"
DESTINATION_EXISTS = "DestinationExists"


class MoverFailure(Exception):
    """A failure with the reason the operator acts on and whether a retry can help."""

    def __init__(
        self, reason: str, message: str, *, transient: bool, extra: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.transient = transient
        self.extra = extra or {}


@dataclass(frozen=True)
class RequestFiles:
    """The request Secret as mounted: one file per key."""

    request_id: int
    key: str
    directory: Path

    def optional(self, name: str) -> str | None:
        path = self.directory / name
        return path.read_text() if path.is_file() else None

    @classmethod
    def read(cls, directory: Path) -> RequestFiles:
        try:
            request_id = int((directory / "requestId").read_text().strip())
            key = (directory / "key").read_text().strip()
        except (OSError, ValueError) as exc:
            raise MoverFailure(
                "RequestSecretUnreadable",
                f"request Secret files unreadable in {directory} ({type(exc).__name__}): "
                "expected files 'requestId' and 'key'",
                transient=False,
            ) from None
        register_secret(key)
        return cls(request_id, key, directory)


class ProgressPrinter:
    """Prints `<verb>: <done>/<total> bytes (<pct>%)` at most every couple of seconds."""

    def __init__(self, verb: str, total: int | None = None) -> None:
        self.verb = verb
        self.total = total
        self._last = 0.0

    def __call__(self, done: int, total: int | None) -> None:
        total = total or self.total
        now = time.monotonic()
        if now - self._last < PROGRESS_EVERY_SECONDS and (total is None or done < total):
            return
        self._last = now
        if total:
            percent = min(100, done * 100 // total) if total else 100
            click.echo(f"{self.verb}: {done}/{total} bytes ({percent}%)")
        else:
            click.echo(f"{self.verb}: {done} bytes")


def write_termination_message(path: Path, result: dict[str, Any]) -> None:
    """Write the JSON result where the kubelet reads it, truncated to fit its 4 KiB limit."""
    text = redact(json.dumps(result, sort_keys=True))
    if len(text.encode()) > TERMINATION_MESSAGE_LIMIT:
        short = {k: v for k, v in result.items() if k != "failures"}
        short["error"] = str(short.get("error", ""))[:1000]
        text = redact(json.dumps(short, sort_keys=True))[:TERMINATION_MESSAGE_LIMIT]
    try:
        path.write_text(text)
    except OSError as exc:
        click.echo(f"warning: cannot write the termination message to {path}: {exc}", err=True)


def classify(exc: BaseException) -> MoverFailure:
    """Turn what a transfer or the platform raised into the reason the operator acts on."""
    from odoo_upgrade.transfer import DestinationExists, TransferError

    if isinstance(exc, MoverFailure):
        return exc
    if isinstance(exc, DestinationExists):
        return MoverFailure(DESTINATION_EXISTS, str(exc), transient=False)
    if isinstance(exc, PlatformFailure):
        if exc.transient:
            return MoverFailure("PlatformUnavailable", str(exc), transient=True)
        return MoverFailure(
            "PlatformFailure",
            str(exc),
            transient=False,
            extra={"failures": [f.to_json() for f in exc.failures]},
        )
    if isinstance(exc, PlatformError):
        reason = "PlatformUnavailable" if exc.transient else "PlatformProtocolError"
        return MoverFailure(reason, str(exc), transient=exc.transient)
    if isinstance(exc, TransferError):
        return MoverFailure(exc.reason, str(exc), transient=exc.transient)
    if isinstance(exc, KeyboardInterrupt):
        return MoverFailure("Interrupted", "interrupted", transient=True)
    return MoverFailure("MoverCrashed", f"{type(exc).__name__}: {exc}", transient=True)


def run_and_report(termination_log: Path, action: Callable[[], dict[str, Any]]) -> NoReturn:
    """Run `action`, write its result (or the failure) to the termination log, exit."""
    try:
        result = action()
    except BaseException as exc:  # the result must be written whatever happened
        if isinstance(exc, SystemExit):
            raise
        failure = classify(exc)
        message = redact(str(failure))
        write_termination_message(
            termination_log, {"error": message, "reason": failure.reason, **failure.extra}
        )
        click.echo(f"error: {message} ({failure.reason})", err=True)
        sys.exit(EXIT_TRANSIENT if failure.transient else EXIT_PERMANENT)
    write_termination_message(termination_log, result)
    click.echo(json.dumps(result, sort_keys=True))
    sys.exit(0)


def choose_transport(transport: str, size: int, threshold: int, request: RequestFiles) -> str:
    """`auto` means SFTP above the threshold when the operator provided SFTP access."""
    if transport != "auto":
        return transport
    if size > threshold and request.optional("sftp-access"):
        return "sftp"
    return "https"


def upload(
    platform_url: str, request_dir: Path, source: Path, transport: str, threshold: int
) -> dict[str, Any]:
    """Upload `source` for the request; return the result dict."""
    from odoo_upgrade import transfer

    request = RequestFiles.read(request_dir)
    if not source.is_file():
        raise MoverFailure(SOURCE_NOT_FOUND, f"source file not found: {source}", transient=False)
    size = source.stat().st_size
    chosen = choose_transport(transport, size, threshold, request)
    click.echo(f"upload: {size} bytes over {chosen} for request {request.request_id}")
    progress = ProgressPrinter("upload", size)
    if chosen == "https":
        result = asyncio.run(
            transfer.upload_https(
                platform_url, request.request_id, request.key, source, progress=progress
            )
        )
    else:
        access_text = request.optional("sftp-access")
        private_key = request.optional("ssh-privatekey")
        if not access_text or not private_key:
            raise MoverFailure(
                "SftpAccessMissing",
                "SFTP upload asked but the request Secret has no sftp-access/ssh-privatekey",
                transient=False,
            )
        access = SftpAccess.from_json(json.loads(access_text))
        pinned = (request.optional("sftp-host-key") or "").strip()
        host_key = transfer.HostKeyCheck(
            pinned=pinned or None,
            on_first_use=None if pinned else lambda line: click.echo(f"upload: host key {line}"),
        )
        result = transfer.upload_sftp(
            access, private_key, source, host_key=host_key, progress=progress
        )
    return {**result.to_json(), "transport": chosen}


async def upgraded_dump_url(platform_url: str, request: RequestFiles, fmt: str) -> str:
    """The key-bearing URL of the upgraded dump (never printed)."""
    async with PlatformClient(platform_url) as platform:
        current = await platform.status(request.request_id, request.key)
    url = current.upgraded_dump_url if fmt == "archive" else current.upgraded_sql_url
    if not current.succeeded or not url:
        raise MoverFailure(
            "NotReady",
            f"the upgraded dump is not available yet (platform state {current.state})",
            transient=True,
        )
    register_secret(url)
    return url


def download(platform_url: str, request_dir: Path, destination: Path, fmt: str) -> dict[str, Any]:
    """Download the upgraded dump to `destination` (never over an existing file)."""
    from odoo_upgrade import transfer

    request = RequestFiles.read(request_dir)
    if destination.exists():
        raise MoverFailure(
            DESTINATION_EXISTS,
            f"destination file already exists, not overwritten: {destination}",
            transient=False,
        )
    url = asyncio.run(upgraded_dump_url(platform_url, request, fmt))
    destination.parent.mkdir(parents=True, exist_ok=True)
    click.echo(f"download: upgraded {fmt} of request {request.request_id} to {destination}")
    result = asyncio.run(
        transfer.download_https(url, destination, progress=ProgressPrinter("download"))
    )
    return {**result.to_json(), "transport": "https", "path": str(destination)}


def _setup_logging() -> None:
    logging.basicConfig(
        level=os.environ.get("ODOO_UPGRADE_LOG_LEVEL", "WARNING"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    install_log_redaction()


PLATFORM_URL = click.option(
    "--platform-url", required=True, help="Base URL of the Upgrade Platform."
)
REQUEST_DIR = click.option(
    "--request-dir",
    required=True,
    type=click.Path(path_type=Path, file_okay=False),
    help="Directory of the mounted request Secret (requestId, key, ssh-privatekey, ...).",
)
TERMINATION_LOG = click.option(
    "--termination-log",
    default="/dev/termination-log",
    show_default=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="Where to write the JSON result (the pod's terminationMessagePath).",
)


@click.group("mover")
def mover_group() -> None:
    """Mover Job entrypoint: move one dump between a volume and the Upgrade Platform."""
    _setup_logging()


@mover_group.command("upload")
@PLATFORM_URL
@REQUEST_DIR
@click.option(
    "--source",
    required=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="The dump to upload.",
)
@click.option(
    "--transport",
    type=click.Choice(["auto", "https", "sftp"]),
    default="https",
    show_default=True,
    help="auto: SFTP above --sftp-threshold-bytes when SFTP access was provided.",
)
@click.option(
    "--sftp-threshold-bytes",
    type=click.IntRange(min=0),
    default=DEFAULT_SFTP_THRESHOLD_BYTES,
    show_default=True,
    help="With --transport auto, dumps larger than this go over SFTP.",
)
@TERMINATION_LOG
def upload_command(
    platform_url: str,
    request_dir: Path,
    source: Path,
    transport: str,
    sftp_threshold_bytes: int,
    termination_log: Path,
) -> None:
    """Upload the source dump for the request in --request-dir."""
    run_and_report(
        termination_log,
        lambda: upload(platform_url, request_dir, source, transport, sftp_threshold_bytes),
    )


@mover_group.command("download")
@PLATFORM_URL
@REQUEST_DIR
@click.option(
    "--destination",
    required=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="Where to write the upgraded dump (must not exist).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["archive", "sql"]),
    default="archive",
    show_default=True,
    help="The upgraded dump archive, or the plain SQL stream.",
)
@TERMINATION_LOG
def download_command(
    platform_url: str, request_dir: Path, destination: Path, fmt: str, termination_log: Path
) -> None:
    """Download the upgraded dump of the request in --request-dir."""
    run_and_report(termination_log, lambda: download(platform_url, request_dir, destination, fmt))


if __name__ == "__main__":
    mover_group(prog_name="odoo-upgrade mover")
