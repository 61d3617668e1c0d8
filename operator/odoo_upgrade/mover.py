"""`odoo-upgrade mover upload|download|check|dump|restore`: the entrypoint of the mover Jobs.

A mover knows nothing of kopf or the Kubernetes API (its pod has no token). It reads the request
from the files of the mounted request Secret, moves one dump with `odoo_upgrade.transfer`, prints
progress lines to its log (`request.progress`), and reports its result as JSON in the
termination message (`request.mover_result`). `--api` names the platform API: database-v1
(HTTPS or SFTP, one upgraded file) or upgrade-request (rsync over SSH inside a transfer window,
a directory of files back).

    {"bytes": n, "sha256": hex, "attempts": n, "transport": t}          success, exit 0
    {"error": "...", "reason": "...", "transient": bool}                failure, exit 1 or 2

`transient` tells the operator whether a later attempt may succeed. Exit 1: another pod may
succeed at once (network, platform unavailable), the Job retries; exit 2: another pod would
fail the same way (source missing, destination exists, refused by the platform), the Job's
podFailurePolicy fails the Job at once and the operator decides.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from odoo_upgrade import __version__
from odoo_upgrade.cli import LazyGroup
from odoo_upgrade.platform import PlatformError, PlatformFailure
from odoo_upgrade.platform.apis import insecure_hosts_named_by
from odoo_upgrade.platform.upgrade_request import UpgradeRequestClient
from odoo_upgrade.platform.v1 import DatabaseV1
from odoo_upgrade.redact import install_log_redaction, redact, register_secret
from odoo_upgrade.request.mover_result import (
    ARGUMENTS_REJECTED,
    DESTINATION_EXISTS,
    EXIT_PERMANENT,
    EXIT_RETRY_POD,
    INTERRUPTED,
    MOVER_CRASHED,
    NOT_READY,
    SOURCE_NOT_FOUND,
    MoverResult,
    termination_text,
)
from odoo_upgrade.request.platform import PlatformApi, RequestRef
from odoo_upgrade.request.progress import ProgressLine
from odoo_upgrade.request.sftp_grant import host_key_check
from odoo_upgrade.request.states import UPGRADE_REQUEST_STATES, StateClass
from odoo_upgrade.request.stored import StoredRequest, StoredRequestUnreadable
from odoo_upgrade.request.transport import (
    DEFAULT_SFTP_THRESHOLD_BYTES,
    Transport,
    choose_transport,
    transport_fits,
    transports_of,
)
from odoo_upgrade.request.upgraded import UpgradedFormat, upgraded_sftp_name, upgraded_url

if TYPE_CHECKING:
    from odoo_upgrade.transfer import DownloadBinding, TransferResult
    from odoo_upgrade.transfer.rsync import DownloadedSet

PROGRESS_EVERY_SECONDS = 2.0


class MoverFailure(Exception):
    """A failure with the reason the operator acts on and whether a later attempt may help.

    `retry_pod`: whether another pod may succeed at once (exit 1) rather than only a later
    attempt after something changed (exit 2); by default the same as `transient`.
    """

    def __init__(
        self,
        reason: str,
        message: str,
        *,
        transient: bool,
        retry_pod: bool | None = None,
        failures: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.transient = transient
        self.retry_pod = transient if retry_pod is None else retry_pod
        self.failures = failures or []


class ProgressPrinter:
    """Prints a progress line (`request.progress`) at most every couple of seconds."""

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
        click.echo(ProgressLine(self.verb, done, total).render())


def read_request(directory: Path) -> StoredRequest:
    """The request from the mounted Secret's files; a permanent failure if unreadable."""
    try:
        return StoredRequest.from_directory(directory)
    except StoredRequestUnreadable as exc:
        raise MoverFailure(
            "RequestSecretUnreadable",
            f"request Secret files unreadable in {directory} ({exc}): expected files "
            "'requestId' and 'key' (or 'token')",
            transient=False,
        ) from None


def write_termination_message(path: Path, result: MoverResult) -> None:
    """Write the JSON result where the kubelet reads it, redacted, cut to fit 4 KiB."""
    try:
        path.write_text(redact(termination_text(result)))
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
            failures=[f.to_json() for f in exc.failures],
        )
    if isinstance(exc, PlatformError):
        reason = "PlatformUnavailable" if exc.transient else "PlatformProtocolError"
        return MoverFailure(reason, str(exc), transient=exc.transient)
    if isinstance(exc, TransferError):
        return MoverFailure(exc.reason, str(exc), transient=exc.transient)
    if isinstance(exc, KeyboardInterrupt):
        return MoverFailure(INTERRUPTED, "interrupted", transient=True)
    return MoverFailure(MOVER_CRASHED, f"{type(exc).__name__}: {exc}", transient=True)


class HostKeySeen:
    """Remembers the SFTP host key a transfer trusted on first use, for the result."""

    def __init__(self) -> None:
        self.line: str | None = None

    def __call__(self, line: str) -> None:
        self.line = line
        click.echo(f"sftp: host key {line} trusted on first use")


def run_and_report(termination_log: Path, action: Callable[[HostKeySeen], MoverResult]) -> NoReturn:
    """Run `action`, write its result (or the failure) to the termination log, exit."""
    seen = HostKeySeen()
    try:
        result = action(seen)
    except BaseException as exc:  # the result must be written whatever happened
        if isinstance(exc, SystemExit):
            raise
        failure = classify(exc)
        message = redact(str(failure))
        write_termination_message(
            termination_log,
            MoverResult.failure(
                failure.reason,
                message,
                transient=failure.transient,
                failures=failure.failures,
                host_key=seen.line,
            ),
        )
        click.echo(f"error: {message} ({failure.reason})", err=True)
        sys.exit(EXIT_RETRY_POD if failure.retry_pod else EXIT_PERMANENT)
    write_termination_message(termination_log, result)
    click.echo(redact(termination_text(result)))
    sys.exit(0)


def upload(
    platform_url: str,
    request_dir: Path,
    source: Path,
    transport: str,
    threshold: int,
    seen: HostKeySeen,
    api: str = PlatformApi.DATABASE_V1,
    plain_http_hosts: tuple[str, ...] = (),
) -> MoverResult:
    """Upload `source` for the request."""
    from odoo_upgrade import transfer

    check_transport(api, transport)
    request = read_request(request_dir)
    if api == PlatformApi.UPGRADE_REQUEST:
        if not source.is_file() and not source.is_dir():
            raise MoverFailure(
                SOURCE_NOT_FOUND,
                f"source dump not found: {source}",
                transient=True,
                retry_pod=False,
            )
        return asyncio.run(upload_rsync(platform_url, request, source, plain_http_hosts))
    if source.is_dir():
        raise MoverFailure(
            "SourceIsDirectory",
            f"source {source} is a directory: database-v1 uploads one dump file (a "
            "directory-format dump needs --api upgrade-request)",
            transient=False,
        )
    if not source.is_file():
        # A later attempt may find it (the user copies it in); another pod now would not.
        raise MoverFailure(
            SOURCE_NOT_FOUND, f"source file not found: {source}", transient=True, retry_pod=False
        )
    size = source.stat().st_size
    chosen = choose_transport(
        transport, size, threshold, sftp_available=request.sftp_access is not None
    )
    click.echo(f"upload: {size} bytes over {chosen} for request {request.request_id}")
    progress = ProgressPrinter("upload", size)
    if chosen is Transport.HTTPS:
        result = asyncio.run(
            transfer.upload_https(
                platform_url, request.request_id, request.key, source, progress=progress
            )
        )
    else:
        if request.sftp_access is None or not request.ssh_private_key:
            raise MoverFailure(
                "SftpAccessMissing",
                "SFTP upload asked but the request Secret has no sftp-access/ssh-privatekey",
                transient=False,
            )
        check = host_key_check(None, request.sftp_host_key, seen)
        result = transfer.upload_sftp(
            request.sftp_access, request.ssh_private_key, source, host_key=check, progress=progress
        )
    return MoverResult(
        True,
        bytes=result.bytes,
        sha256=result.sha256,
        attempts=result.attempts,
        transport=chosen.value,
        host_key=seen.line,
    )


def check_transport(api: str, transport: str) -> None:
    """A transport of another API is a usage error of the Job, not something to retry."""
    if not transport_fits(api, transport):
        raise MoverFailure(
            "TransportNotOffered",
            f"--transport {transport} is not a transport of --api {api} (expected "
            f"{' or '.join(transports_of(api))})",
            transient=False,
        )


def request_client(
    platform_url: str, request: StoredRequest, plain_http_hosts: tuple[str, ...]
) -> UpgradeRequestClient:
    """A client of the request's assigned host (plain http only where the operator allows)."""
    if not request.assigned_host:
        raise MoverFailure(
            "RequestSecretUnreadable",
            "the request Secret has no 'assignedHost' (an upgrade/request request has one)",
            transient=False,
        )
    return UpgradeRequestClient(
        platform_url,
        assigned_host_uri=request.assigned_host,
        allow_insecure_hosts=insecure_hosts_named_by(platform_url) | set(plain_http_hosts),
    )


def request_private_key(request: StoredRequest) -> str:
    if not request.ssh_private_key:
        raise MoverFailure(
            "RequestSecretUnreadable",
            "the request Secret has no 'ssh-privatekey' (made at create for rsync)",
            transient=False,
        )
    return request.ssh_private_key


async def upload_rsync(
    platform_url: str, request: StoredRequest, source: Path, plain_http_hosts: tuple[str, ...]
) -> MoverResult:
    """rsync `source` (a file, or a directory-format dump) to the request's `/data/`."""
    from odoo_upgrade.transfer.rsync_window import upload_through_window

    key = request_private_key(request)
    click.echo(f"upload: {source.name} over rsync for request {request.request_id}")
    async with request_client(platform_url, request, plain_http_hosts) as client:
        sent = await upload_through_window(
            client, request.key, key, source, progress=ProgressPrinter("upload")
        )
    return MoverResult(
        True,
        bytes=sent.bytes,
        sha256=sent.sha256,
        attempts=sent.attempts,
        transport=Transport.RSYNC.value,
        details={"files": sent.files, "remoteName": sent.remote_name},
    )


async def download_rsync(
    platform_url: str,
    request: StoredRequest,
    destination: Path,
    plain_http_hosts: tuple[str, ...],
    binding: DownloadBinding,
) -> MoverResult:
    """rsync the upgraded set into the new directory `destination`, with SHA256SUMS."""
    from odoo_upgrade.transfer.rsync_window import download_through_window

    key = request_private_key(request)
    async with request_client(platform_url, request, plain_http_hosts) as client:
        current = await client.status(request.key)
        if UPGRADE_REQUEST_STATES.classify(current.status) is not StateClass.SUCCEEDED:
            raise MoverFailure(
                NOT_READY,
                f"the upgraded set is not available yet (platform state {current.status})",
                transient=True,
            )
        click.echo(f"download: upgraded set of request {request.request_id} to {destination}")
        got = await download_through_window(
            client,
            request.key,
            key,
            destination,
            progress=ProgressPrinter("download"),
            binding=binding,
        )
    return downloaded_set_result(got)


def downloaded_set_result(got: DownloadedSet) -> MoverResult:
    """The result of a published set: what the operator shows in `status.download`."""
    names = got.to_json()
    return MoverResult(
        True,
        bytes=got.bytes,
        sha256=got.sha256sums,
        attempts=got.attempts,
        transport=Transport.RSYNC.value,
        path=str(got.dump_path),
        details={
            "files": got.files,
            "dumpPath": names["dump"],
            "reportPath": names["report"],
            "logPath": names["log"],
        },
    )


async def upgraded_dump_url(platform_url: str, request: StoredRequest, fmt: str) -> str:
    """The key-bearing URL of the upgraded dump (never printed)."""
    async with DatabaseV1(platform_url) as platform:
        current = await platform.request(RequestRef(request.request_id, request.key))
    url = upgraded_url(current, fmt)
    if not current.succeeded or not url:
        raise MoverFailure(
            NOT_READY,
            f"the upgraded dump is not available yet (platform state {current.state})",
            transient=True,
        )
    register_secret(url)
    return url


def download(
    platform_url: str,
    request_dir: Path,
    destination: Path,
    fmt: str,
    seen: HostKeySeen,
    api: str = PlatformApi.DATABASE_V1,
    plain_http_hosts: tuple[str, ...] = (),
    transport: str | None = None,
) -> MoverResult:
    """Download the upgraded dump to `destination` (never over a file this request did not
    publish); database-v1 over HTTPS or SFTP (`transport`), upgrade-request over rsync."""
    from odoo_upgrade.transfer import DownloadBinding, published_download

    if transport is not None:
        check_transport(api, transport)
    request = read_request(request_dir)
    binding = DownloadBinding(str(request.request_id))
    if api == PlatformApi.UPGRADE_REQUEST:
        from odoo_upgrade.transfer.rsync import published_set

        # Killed after the set's rename, before its result was recorded: its own set.
        adopted = published_set(destination, binding)
        if adopted is not None:
            click.echo(f"download: {destination} already published for {request.request_id}")
            return downloaded_set_result(adopted)
        refuse_existing_destination(destination, "directory")
        destination.parent.mkdir(parents=True, exist_ok=True)
        return asyncio.run(
            download_rsync(platform_url, request, destination, plain_http_hosts, binding)
        )
    chosen = Transport(transport or Transport.HTTPS)  # the operator chose it (download_transport)
    if chosen is Transport.SFTP and fmt != UpgradedFormat.ARCHIVE:
        raise MoverFailure(
            "TransportNotOffered",
            f"--transport sftp downloads the archive only (upgraded_<filename>); --format {fmt} "
            "is downloaded over https",
            transient=False,
        )
    # Killed after the rename, before its result was recorded: its own file is the result.
    published = published_download(destination, binding)
    if published is not None:
        click.echo(f"download: {destination} already published for request {request.request_id}")
        return downloaded_result(published, chosen, destination, seen)
    refuse_existing_destination(destination, "file")
    destination.parent.mkdir(parents=True, exist_ok=True)
    click.echo(
        f"download: upgraded {fmt} of request {request.request_id} over {chosen} to {destination}"
    )
    if chosen is Transport.SFTP:
        result = download_over_sftp(request, destination, binding, seen)
    else:
        from odoo_upgrade import transfer

        url = asyncio.run(upgraded_dump_url(platform_url, request, fmt))
        result = asyncio.run(
            transfer.download_https(
                url, destination, progress=ProgressPrinter("download"), binding=binding
            )
        )
    return downloaded_result(result, chosen, destination, seen)


def refuse_existing_destination(destination: Path, what: str) -> None:
    if destination.exists() or destination.is_symlink():
        raise MoverFailure(
            DESTINATION_EXISTS,
            f"destination {what} already exists, not overwritten: {destination}",
            transient=False,
        )


def download_over_sftp(
    request: StoredRequest, destination: Path, binding: DownloadBinding, seen: HostKeySeen
) -> TransferResult:
    """`get upgraded_<filename>` with the SFTP download grant, the host key pinned as for the
    upload (the user's pin, else the key recorded on first use)."""
    from odoo_upgrade import transfer

    access = request.sftp_download_access
    if access is None or not request.ssh_private_key:
        raise MoverFailure(
            "SftpAccessMissing",
            "SFTP download asked but the request Secret has no sftp-download-access/"
            "ssh-privatekey (granted by the operator once the request is done)",
            transient=False,
        )
    check = host_key_check(None, request.sftp_host_key, seen)
    return transfer.download_sftp(
        access,
        request.ssh_private_key,
        upgraded_sftp_name(access.shared_file),
        destination,
        host_key=check,
        binding=binding,
        progress=ProgressPrinter("download"),
    )


def downloaded_result(
    result: TransferResult, transport: Transport, destination: Path, seen: HostKeySeen
) -> MoverResult:
    return MoverResult(
        True,
        bytes=result.bytes,
        sha256=result.sha256,
        attempts=result.attempts,
        transport=transport.value,
        path=str(destination),
        host_key=seen.line,
    )


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
API = click.option(
    "--api",
    type=click.Choice([a.value for a in PlatformApi]),
    default=PlatformApi.DATABASE_V1.value,
    show_default=True,
    help="The platform API of the request (spec.platform.api).",
)
PLAIN_HTTP_HOST = click.option(
    "--plain-http-host",
    "plain_http_hosts",
    multiple=True,
    metavar="HOST:PORT",
    help="upgrade-request: a host the operator allows without TLS (an allowlisted emulator), "
    "besides the --platform-url one. Repeatable.",
)
TERMINATION_LOG = click.option(
    "--termination-log",
    default="/dev/termination-log",
    show_default=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="Where to write the JSON result (the pod's terminationMessagePath).",
)


def _termination_log_among(args: list[str]) -> Path:
    """The `--termination-log` among raw arguments (click could not parse them), else the
    kubelet's default path."""
    for index, arg in enumerate(args):
        if arg == "--termination-log" and index + 1 < len(args):
            return Path(args[index + 1])
        if arg.startswith("--termination-log="):
            return Path(arg.partition("=")[2])
    return Path("/dev/termination-log")


def _unknown_to_this_image(error: click.UsageError) -> bool:
    """An option, command or argument this mover does not have, or one it needs that the
    operator did not pass: the two versions disagree. A bad value (a path of the wrong type
    on the volume) is the spec's problem, not the image's."""
    if isinstance(error, click.MissingParameter | click.NoSuchOption | click.NoSuchCommand):
        return True
    return type(error) is click.UsageError  # "Got unexpected extra argument"


def reject_arguments(args: list[str], error: click.UsageError) -> NoReturn:
    """Fail with a result of its own, not transient: no other pod of the same image would do
    better. Arguments this mover does not know come from an operator newer than its image."""
    message = f"the mover rejected its arguments: {error.format_message().rstrip('.')}"
    if _unknown_to_this_image(error):
        message += (
            f"; is the mover image (version {__version__}) older than the operator that made "
            "the Job? Use the image of the operator's version"
        )
    write_termination_message(
        _termination_log_among(args),
        MoverResult.failure(ARGUMENTS_REJECTED, redact(message), transient=False),
    )
    click.echo(f"error: {redact(message)} ({ARGUMENTS_REJECTED})", err=True)
    sys.exit(EXIT_PERMANENT)


class MoverCommand(click.Command):
    """A mover direction: arguments it does not know end in a result, not only in usage text."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        raw = list(args)
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as error:
            reject_arguments(raw, error)


class MoverGroup(LazyGroup):
    """The mover's directions; a direction it does not have is rejected the same way."""

    command_class = MoverCommand

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        """Options before the direction (`mover --x upload`) are rejected like a direction's;
        no arguments at all is a person asking for the usage text."""
        raw = list(args)
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as error:
            if not raw:
                raise
            reject_arguments(raw, error)

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        try:
            return super().resolve_command(ctx, args)
        except click.UsageError as error:
            reject_arguments(list(args), error)


# The database directions, loaded only when invoked (odoo_upgrade.mover_database).
DATABASE_COMMANDS = {
    "check": (
        "odoo_upgrade.mover_database:check_command",
        "Pre-flight: databases reachable, versions, restore target and filestore free.",
    ),
    "dump": ("odoo_upgrade.mover_database:dump_command", "Dump a live database to a new file."),
    "restore": (
        "odoo_upgrade.mover_database:restore_command",
        "Restore the upgraded dump into a new, verified database.",
    ),
}


@click.group("mover", cls=MoverGroup, lazy_commands=DATABASE_COMMANDS)
def mover_group() -> None:
    """Mover Job entrypoint: move one dump between a volume and the Upgrade Platform."""
    _setup_logging()


@mover_group.command("upload")
@PLATFORM_URL
@REQUEST_DIR
@API
@click.option(
    "--source",
    required=True,
    type=click.Path(path_type=Path),
    help="The dump to upload (with --api upgrade-request also a directory-format dump).",
)
@click.option(
    "--transport",
    type=click.Choice([t.value for t in Transport]),
    default=Transport.HTTPS.value,
    show_default=True,
    help="auto: SFTP above --sftp-threshold-bytes when SFTP access was provided (database-v1), "
    "rsync (upgrade-request).",
)
@click.option(
    "--sftp-threshold-bytes",
    type=click.IntRange(min=0),
    default=DEFAULT_SFTP_THRESHOLD_BYTES,
    show_default=True,
    help="With --transport auto, dumps larger than this go over SFTP.",
)
@PLAIN_HTTP_HOST
@TERMINATION_LOG
def upload_command(
    platform_url: str,
    request_dir: Path,
    api: str,
    source: Path,
    transport: str,
    sftp_threshold_bytes: int,
    plain_http_hosts: tuple[str, ...],
    termination_log: Path,
) -> None:
    """Upload the source dump for the request in --request-dir."""
    run_and_report(
        termination_log,
        lambda seen: upload(
            platform_url,
            request_dir,
            source,
            transport,
            sftp_threshold_bytes,
            seen,
            api,
            plain_http_hosts,
        ),
    )


@mover_group.command("download")
@PLATFORM_URL
@REQUEST_DIR
@API
@click.option(
    "--destination",
    required=True,
    type=click.Path(path_type=Path),
    help="Where to write the upgraded dump (must not exist); with --api upgrade-request a new "
    "directory receiving the upgraded set and its SHA256SUMS.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice([f.value for f in UpgradedFormat]),
    default=UpgradedFormat.ARCHIVE.value,
    show_default=True,
    help="The upgraded dump archive, or the plain SQL stream (database-v1).",
)
@click.option(
    "--transport",
    type=click.Choice([t.value for t in Transport if t is not Transport.AUTO]),
    default=None,
    help="database-v1: https (default) or sftp (the archive as upgraded_<filename>, with the "
    "request Secret's sftp-download-access); upgrade-request: rsync (its only one).",
)
@PLAIN_HTTP_HOST
@TERMINATION_LOG
def download_command(
    platform_url: str,
    request_dir: Path,
    api: str,
    destination: Path,
    fmt: str,
    transport: str | None,
    plain_http_hosts: tuple[str, ...],
    termination_log: Path,
) -> None:
    """Download the upgraded dump of the request in --request-dir."""
    run_and_report(
        termination_log,
        lambda seen: download(
            platform_url, request_dir, destination, fmt, seen, api, plain_http_hosts, transport
        ),
    )


if __name__ == "__main__":
    mover_group(prog_name="odoo-upgrade mover")
