"""`odoo-upgrade`: upgrade an Odoo database dump through the Upgrade Platform from a shell or CI.

`run` does the whole flow and can be rerun after a crash, on either platform API (`--api
database-v1`, the default, or `upgrade-request`); `create`, `upload`, `sftp-access`,
`process`, `status` and `download` are thin scripting steps over the database-v1 client and the
transfers; `status`, `process`, `log` and `wipe` also take the request from a state file of
`run` (`--token-from`), which is how an upgrade-request request is addressed. `operator` and
`mover` (the Kubernetes side) are loaded only when invoked, so the CLI starts fast and works
where kopf is not needed.

No command ever prompts: everything comes from options, environment variables or files.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
import os
import re
import signal
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, TypeVar

import click

from odoo_upgrade import __version__
from odoo_upgrade.cli_errors import EXIT_CODES_HELP, UsageProblem, exit_on_errors
from odoo_upgrade.redact import install_log_redaction, redact, register_secret
from odoo_upgrade.request.platform import DEFAULT_PLATFORM_URL, PlatformApi

if TYPE_CHECKING:
    from odoo_upgrade.platform.client import PlatformClient
    from odoo_upgrade.request.platform import Platform, RequestRef
    from odoo_upgrade.runstate import RunState
    from odoo_upgrade.transfer import DownloadBinding, TransferResult

T = TypeVar("T")

MIB = 1024 * 1024
log = logging.getLogger("odoo_upgrade.cli")


class LazyGroup(click.Group):
    """A click group whose heavy subcommands are imported only when invoked.

    `lazy_commands` maps a name to `("module:attribute", "short help")`; the short help is
    listed in `--help` without importing the module (kopf takes a second to import).
    """

    def __init__(
        self, *args: Any, lazy_commands: dict[str, tuple[str, str]] | None = None, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.lazy_commands = dict(lazy_commands or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy_commands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy_commands:
            return self._import_command(cmd_name)
        return super().get_command(ctx, cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = []
        for name in self.list_commands(ctx):
            if name in self.lazy_commands:
                rows.append((name, self.lazy_commands[name][1]))
                continue
            command = super().get_command(ctx, name)
            if command is not None and not command.hidden:
                rows.append((name, command.get_short_help_str(formatter.width - 6 - len(name))))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def _import_command(self, name: str) -> click.Command:
        target, short_help = self.lazy_commands[name]
        module_name, attribute = target.split(":")
        try:
            command = getattr(importlib.import_module(module_name), attribute)
        except (ImportError, AttributeError) as exc:
            reason = f"{type(exc).__name__}: {exc}"

            @click.command(
                name=name, help=short_help, context_settings={"ignore_unknown_options": True}
            )
            @click.argument("args", nargs=-1, type=click.UNPROCESSED)
            def unavailable(args: tuple[str, ...]) -> None:
                raise click.ClickException(
                    f"`odoo-upgrade {name}` is not available in this installation ({reason})"
                )

            return unavailable
        if not isinstance(command, click.Command):
            raise click.ClickException(f"{target} is not a click command")
        return command


# -- shared option parsing ----------------------------------------------------------------


class ByteSize(click.ParamType[int]):
    """A size such as `512MiB`, `1GiB`, `100MB` or a plain number of bytes."""

    name = "size"
    _UNITS = {"": 1, "b": 1, "kb": 1000, "mb": 1000**2, "gb": 1000**3, "kib": 1024,
              "mib": 1024**2, "gib": 1024**3}  # fmt: skip

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", str(value))
        unit = match.group(2).lower() if match else ""
        if not match or unit not in self._UNITS:
            self.fail(f"{value!r} is not a size (expected e.g. 512MiB, 1GiB or a byte count)")
        return int(float(match.group(1)) * self._UNITS[unit])


def read_secret_value(file: Path | None, env_name: str, what: str, option: str) -> str:
    """A secret from `--<x>-file` (first line) or the environment; never from a prompt."""
    if file is not None:
        try:
            value = file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise UsageProblem(f"{option} {file}: cannot read it ({exc.strerror})") from None
        if not value:
            raise UsageProblem(f"{option} {file}: the file is empty (expected the {what})")
    else:
        value = os.environ.get(env_name, "").strip()
    if not value:
        raise UsageProblem(f"missing {what}: pass {option} FILE or set {env_name}")
    register_secret(value)
    return value


def run_async(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine; Ctrl-C surfaces as KeyboardInterrupt (asyncio cancels it cleanly)."""
    return asyncio.run(coroutine)


def platform_url(ctx: click.Context) -> str:
    url: str = ctx.find_root().params["platform_url"]
    return url


def say(message: str) -> None:
    """A progress message for people: stderr, so stdout stays clean for --json."""
    click.echo(redact(message), err=True)


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True))


def stop_on_sigterm() -> None:
    """SIGTERM (CI cancel, `kill`) ends a command like Ctrl-C: state saved, exit 130."""

    def forward(signum: int, frame: FrameType | None) -> None:
        signal.raise_signal(signal.SIGINT)

    signal.signal(signal.SIGTERM, forward)


def configure_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if verbose:
        logging.getLogger("odoo_upgrade").setLevel(logging.DEBUG)
    install_log_redaction()


request_option = click.option(
    "--request",
    "request_id",
    type=click.IntRange(min=1),
    envvar="ODOO_UPGRADE_REQUEST",
    required=True,
    help="Request id (env ODOO_UPGRADE_REQUEST).",
)
key_file_option = click.option(
    "--key-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="File holding the request's private key (or set ODOO_UPGRADE_KEY to the key itself).",
)
json_option = click.option(
    "--json",
    "json_output",
    is_flag=True,
    help='Print the result as JSON on stdout; on failure {"error", "exit_code", "failures"}.',
)
progress_option = click.option(
    "--no-progress", is_flag=True, help="No progress output (bars on a terminal, lines in logs)."
)


def request_key(key_file: Path | None) -> str:
    return read_secret_value(key_file, "ODOO_UPGRADE_KEY", "request key", "--key-file")


api_option = click.option(
    "--api",
    type=click.Choice([a.value for a in PlatformApi]),
    envvar="ODOO_UPGRADE_API",
    default=PlatformApi.DATABASE_V1.value,
    show_default=True,
    help="The platform API: database-v1 (HTTPS/SFTP, one upgraded file back) or "
    "upgrade-request (what Odoo's own script speaks: rsync over SSH, a directory back). "
    "Env ODOO_UPGRADE_API.",
)
token_from_option = click.option(
    "--token-from",
    "state_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The state file of `run` (<dump>.odoo-upgrade.json): the request's id, its key or "
    "token and its assigned host come from there.",
)


def request_from_state(state_file: Path) -> RunState:
    """The request a state file of `run` holds (its secrets registered for redaction)."""
    from odoo_upgrade.runstate import load_state

    state = load_state(state_file)
    if state is None:
        raise UsageProblem(f"--token-from {state_file}: no such state file")
    register_secret(state.key, state.ssh_private_key)
    return state


async def with_platform(
    state: RunState, action: Callable[[Platform, RequestRef], Coroutine[Any, Any, T]]
) -> T:
    """Run `action` on the platform API and URL the state file's request was made on."""
    from odoo_upgrade.platform.apis import open_platform
    from odoo_upgrade.request.platform import RequestRef

    platform = open_platform(state.api, state.platform_url)
    try:
        return await action(platform, RequestRef(state.request_id, state.key, state.assigned_host))
    finally:
        await platform.aclose()


# -- the group ----------------------------------------------------------------------------


@click.group(
    cls=LazyGroup,
    lazy_commands={
        "operator": (
            "odoo_upgrade.controller.entry:operator_command",
            "Run the Kubernetes operator (kopf).",
        ),
        "mover": (
            "odoo_upgrade.mover:mover_group",
            "Mover Job entrypoint: upload, download, check, dump or restore.",
        ),
    },
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog=EXIT_CODES_HELP,
)
@click.option(
    "--platform-url",
    envvar="ODOO_UPGRADE_PLATFORM_URL",
    default=DEFAULT_PLATFORM_URL,
    show_default=True,
    help="Upgrade Platform base URL (env ODOO_UPGRADE_PLATFORM_URL).",
)
@click.option("-v", "--verbose", is_flag=True, help="Log what happens (secrets redacted).")
@click.version_option(__version__, prog_name="odoo-upgrade")
@click.pass_context
def cli(ctx: click.Context, platform_url: str, verbose: bool) -> None:
    """Upgrade Odoo databases through the Odoo Upgrade Platform.

    `odoo-upgrade run` does everything: create the request, upload the dump, process, wait,
    download the upgraded dump. The other commands are single steps for scripts.
    """
    group = ctx.command
    if isinstance(group, LazyGroup) and ctx.invoked_subcommand in group.lazy_commands:
        return  # `operator` and `mover` set up their own logging and signal handling
    configure_logging(verbose)
    stop_on_sigterm()


# -- run ------------------------------------------------------------------------------------


@cli.command(epilog=EXIT_CODES_HELP)
@click.option(
    "--dump",
    type=click.Path(path_type=Path),
    help="The database dump to upgrade (pg_dump custom, SQL, zip or gzip; with --api "
    "upgrade-request also a pg_dump directory-format dump). With --database: where the dump is "
    "written first (default: <database>.dump here; never over a file).",
)
@click.option(
    "--database",
    help="Dump this live PostgreSQL database first (pg_dump --format=custom --no-owner), "
    "reached with libpq's environment (PGHOST, PGPORT, PGUSER) or --pg-host/--pg-port/"
    "--pg-user; the password only from PGPASSWORD or ~/.pgpass.",
)
@click.option("--pg-host", help="PostgreSQL server of --database and --restore-name (PGHOST).")
@click.option("--pg-port", type=click.IntRange(1, 65535), help="Its port (PGPORT, 5432).")
@click.option("--pg-user", help="The role to connect as (PGUSER).")
@click.option(
    "--restore-name",
    help="Once downloaded, restore the upgraded dump into this NEW database on the same server "
    "(restored under a temporary name, verified at --target, then renamed; an existing "
    "database is never touched).",
)
@click.option(
    "--filestore",
    type=click.Path(file_okay=False, path_type=Path),
    help="With --restore-name: the source database's filestore (only read), copied with the "
    "upgraded archive's filestore merged in.",
)
@click.option(
    "--restore-filestore",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where the new filestore goes (must not exist; default: <filestore>/../<restore-name>).",
)
@api_option
@click.option("--target", required=True, help="Odoo version to upgrade to, e.g. 18.0.")
@click.option("--aim", type=click.Choice(["test", "production"]), default="test", show_default=True)
@click.option("--email", help="Your email address (required to create a database-v1 request).")
@click.option(
    "--contract-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="File holding your contract reference (or set ODOO_UPGRADE_CONTRACT). Never echoed, "
    "never stored.",
)
@click.option("--filename", help="Name the platform shows for the dump (default: its basename).")
@click.option("--timezone", help="Server timezone (only for source versions < 6.1).")
@click.option(
    "--env",
    "env_vars",
    multiple=True,
    metavar="NAME=VALUE",
    help="An environment variable for the upgrade on the platform (--api upgrade-request, sent "
    "as env_vars). Repeatable.",
)
@click.option(
    "--transport",
    type=click.Choice(["auto", "https", "sftp", "rsync"]),
    default="auto",
    show_default=True,
    help="database-v1: auto is SFTP (resumable) above --sftp-threshold, HTTPS below. "
    "upgrade-request: rsync over SSH (auto means rsync).",
)
@click.option(
    "--sftp-threshold",
    type=ByteSize(),
    default="1GiB",
    show_default=True,
    help="Size above which auto picks SFTP (e.g. 512MiB, 2GiB, or bytes); the operator's "
    "spec.sftp.thresholdBytes has the same default.",
)
@click.option(
    "--output",
    type=click.Path(path_type=Path),
    help="Where to write the upgraded dump (default: upgraded_<name> next to the dump). "
    "Never overwritten; <output>.sha256 is written beside it. With --api upgrade-request a "
    "new directory (default upgraded_<stem>) receiving the upgraded set and its SHA256SUMS.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["archive", "sql"]),
    default="archive",
    show_default=True,
    help="Download the upgraded archive, or the plain SQL stream.",
)
@click.option(
    "--poll-interval",
    type=click.FloatRange(min=0.1),
    default=60.0,
    show_default=True,
    help="Seconds between status calls while the platform works.",
)
@click.option(
    "--state-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where progress is recorded (default: <dump>.odoo-upgrade.json). It holds the "
    "request key or token: it is created mode 0600; keep it private.",
)
@json_option
@progress_option
@click.pass_context
def run(
    ctx: click.Context,
    dump: Path | None,
    api: str,
    database: str | None,
    pg_host: str | None,
    pg_port: int | None,
    pg_user: str | None,
    restore_name: str | None,
    filestore: Path | None,
    restore_filestore: Path | None,
    target: str,
    aim: str,
    email: str | None,
    contract_file: Path | None,
    filename: str | None,
    timezone: str | None,
    env_vars: tuple[str, ...],
    transport: str,
    sftp_threshold: int,
    output: Path | None,
    fmt: str,
    poll_interval: float,
    state_file: Path | None,
    json_output: bool,
    no_progress: bool,
) -> None:
    """Do the whole upgrade: create, upload, process, wait, download.

    Progress is recorded in a state file next to the dump after every step; running the same
    command again after a crash or Ctrl-C continues the same request (never a second one).
    A run stopped while `create` was unanswered leaves no request id to continue: the rerun
    then refuses (exit 2) and says what to check before the state file is deleted.

    \b
    Example (CI, no prompts):
      ODOO_UPGRADE_CONTRACT=M123456-abcdef odoo-upgrade run --dump acme.dump \\
          --target 18.0 --email ops@acme.example
    \b
    From a live database to a restored, verified upgraded one (like the official script's
    `test -d acme -t 18.0 -r acme_18`), resumable the same way:
      PGHOST=db PGUSER=odoo PGPASSWORD=... odoo-upgrade run --database acme --target 18.0 \\
          --email ops@acme.example --restore-name acme_18 --filestore filestore/acme
      ODOO_UPGRADE_CONTRACT=M123456-abcdef odoo-upgrade run --api upgrade-request \\
          --dump acme.dump --target 18.0
    """
    with exit_on_errors(json_output=json_output, rerun_hint="rerun the same command to continue"):
        from odoo_upgrade.runflow import (
            RunOptions,
            default_output,
            default_state_file,
            run_upgrade,
        )

        databases = database_options(
            database, pg_host, pg_port, pg_user, restore_name, filestore, restore_filestore
        )
        if dump is None:
            if database is None:
                raise UsageProblem("missing --dump FILE (or --database NAME to dump one first)")
            dump = Path(f"{database}.dump")
        contract = None
        if contract_file is not None or os.environ.get("ODOO_UPGRADE_CONTRACT"):
            contract = read_secret_value(
                contract_file, "ODOO_UPGRADE_CONTRACT", "contract", "--contract-file"
            )
        options = RunOptions(
            platform_url=platform_url(ctx),
            dump=dump,
            target=target,
            aim=aim,
            email=email,
            contract=contract,
            filename=filename or dump.name,
            timezone=timezone,
            transport=transport,
            sftp_threshold=sftp_threshold,
            output=output or default_output(dump, fmt, api),
            format=fmt,
            poll_interval=poll_interval,
            state_file=state_file or default_state_file(dump),
            show_progress=not no_progress,
            databases=databases,
            api=api,
            env_vars=env_vars,
        )
        summary = run_async(run_upgrade(options, say))
        if json_output:
            print_json(summary.to_json())
        else:
            print_run_summary(summary.to_json())


def database_options(
    database: str | None,
    pg_host: str | None,
    pg_port: int | None,
    pg_user: str | None,
    restore_name: str | None,
    filestore: Path | None,
    restore_filestore: Path | None,
) -> Any:
    """`run`'s database flags as `run_database.DatabaseOptions` (None without any)."""
    if filestore is not None and restore_name is None:
        raise UsageProblem("--filestore needs --restore-name (the database it is copied for)")
    if restore_filestore is not None and filestore is None:
        raise UsageProblem("--restore-filestore needs --filestore (the filestore to copy)")
    if database is None and restore_name is None:
        if pg_host or pg_port or pg_user:
            raise UsageProblem("--pg-host/--pg-port/--pg-user need --database or --restore-name")
        return None
    from odoo_upgrade.database import settings_from_environment
    from odoo_upgrade.run_database import DatabaseOptions

    if filestore is not None and restore_filestore is None and restore_name is not None:
        restore_filestore = filestore.parent / restore_name  # Odoo's <data_dir>/filestore/<db>
    return DatabaseOptions(
        settings=settings_from_environment(host=pg_host, port=pg_port, user=pg_user),
        source=database,
        restore=restore_name,
        filestore=filestore,
        restore_filestore=restore_filestore,
    )


def print_run_summary(data: dict[str, Any]) -> None:
    from odoo_upgrade.progress import format_duration
    from odoo_upgrade.request.progress import format_bytes

    def size(value: int | None) -> str:
        return "-" if value is None else f"{format_bytes(value)} ({value} bytes)"

    downloaded = size(data["bytes_downloaded"])
    if data.get("download_transport"):
        downloaded += f" over {data['download_transport']}"
    if data.get("files") is not None:
        downloaded += f", {data['files']} files checked by {data['sha256_file']}"
    rows = [
        ("request", str(data["request_id"])),
        ("target", data["target"]),
        ("platform state", data["platform_state"]),
        ("uploaded", f"{size(data['bytes_uploaded'])} over {data['transport']}"),
        ("downloaded", downloaded),
        ("sha256", data["sha256"] or "-"),
        ("output", data["output"]),
    ]
    database = data.get("database") or {}
    if database.get("dumped"):
        rows.insert(
            3, ("dumped", f"{database['dumped']} (PostgreSQL {database['server_version']})")
        )
    if database.get("restored"):
        files = database.get("filestore_files")
        rows.append(("restored", f"{database['restored']} (base {database['base_version']})"))
        if files is not None:
            rows.append(("filestore", f"{files} files"))
    rows.append(("elapsed", format_duration(data["elapsed_seconds"])))
    click.echo("upgrade finished:")
    for name, value in rows:
        click.echo(f"  {name + ':':16}{value}")


# -- scripting steps ----------------------------------------------------------------------


async def with_client(url: str, action: Callable[[PlatformClient], Coroutine[Any, Any, T]]) -> T:
    from odoo_upgrade.platform.client import PlatformClient

    async with PlatformClient(url) as client:
        return await action(client)


@cli.command()
@click.option("--target", required=True, help="Odoo version to upgrade to, e.g. 18.0.")
@click.option("--aim", type=click.Choice(["test", "production"]), default="test", show_default=True)
@click.option("--email", required=True, help="Your email address.")
@click.option(
    "--contract-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="File holding your contract reference (or set ODOO_UPGRADE_CONTRACT).",
)
@click.option("--filename", required=True, help="Name the platform shows for the dump.")
@click.option("--timezone", help="Server timezone (only for source versions < 6.1).")
@click.option(
    "--save-key",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the request's private key to this file (mode 0600), for --key-file later.",
)
@json_option
@click.pass_context
def create(
    ctx: click.Context,
    target: str,
    aim: str,
    email: str,
    contract_file: Path | None,
    filename: str,
    timezone: str | None,
    save_key: Path | None,
    json_output: bool,
) -> None:
    """Create a request (its key only with --json or --save-key).

    The key is a secret: it is printed only with --json (stdout then holds a secret) or
    written with --save-key (mode 0600); it is never logged.
    """
    with exit_on_errors(json_output=json_output):
        contract = read_secret_value(
            contract_file, "ODOO_UPGRADE_CONTRACT", "contract", "--contract-file"
        )
        if save_key is not None and save_key.exists():
            raise UsageProblem(f"--save-key {save_key} exists already; it is never overwritten")
        request = run_async(
            with_client(
                platform_url(ctx),
                lambda client: client.create(
                    contract=contract,
                    email=email,
                    target=target,
                    aim=aim,
                    filename=filename,
                    timezone=timezone,
                ),
            )
        )
        if save_key is not None:
            from odoo_upgrade.runstate import write_secret_file

            write_secret_file(save_key, request.key + "\n")
        if json_output:
            print_json(
                {
                    "id": request.id,
                    "key": request.key,
                    "state": request.state,
                    "target": request.target,
                    "aim": request.aim,
                    "filename": request.filename,
                }
            )
        else:
            where = (
                f"; key written to {save_key}"
                if save_key
                else " (use --json or --save-key for its key)"
            )
            click.echo(f"created request {request.id} in state {request.state}{where}")


@cli.command()
@request_option
@key_file_option
@click.option(
    "--dump",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    required=True,
    help="The database dump to send.",
)
@click.option(
    "--transport",
    type=click.Choice(["https", "sftp"]),
    default="https",
    show_default=True,
    help="sftp: a fresh SSH key pair is made and let in with request_sftp_access.",
)
@click.option(
    "--host-key",
    help="Expected SFTP host key (`ssh-ed25519 AAAA…`); default: trust the key seen first.",
)
@json_option
@progress_option
@click.pass_context
def upload(
    ctx: click.Context,
    request_id: int,
    key_file: Path | None,
    dump: Path,
    transport: str,
    host_key: str | None,
    json_output: bool,
    no_progress: bool,
) -> None:
    """Upload a dump to a request in `draft`.

    HTTPS sends it as one request body; SFTP resumes an interrupted upload.
    """
    with exit_on_errors(json_output=json_output):
        key = request_key(key_file)
        from odoo_upgrade.progress import TransferProgress

        progress = TransferProgress("upload", enabled=not no_progress)
        url = platform_url(ctx)
        if transport == "sftp":
            result = run_async(upload_sftp_step(url, request_id, key, dump, host_key, progress))
        else:
            from odoo_upgrade.transfer import upload_https

            result = run_async(upload_https(url, request_id, key, dump, progress=progress))
        progress.finish()
        print_transfer(result, json_output, transport=transport)


async def upload_sftp_step(
    url: str,
    request_id: int,
    key: str,
    dump: Path,
    host_key: str | None,
    progress: Callable[[int, int | None], None],
) -> TransferResult:
    from odoo_upgrade.request.sftp_grant import grant_sftp_access, host_key_check
    from odoo_upgrade.runflow import run_in_daemon_thread
    from odoo_upgrade.transfer import upload_sftp

    grant = await with_client(url, lambda client: grant_sftp_access(client, request_id, key))
    # Without --host-key: trust the key the server shows first (and pin it for reconnections).
    check = host_key_check(host_key, None, accept_first_host_key)
    return await run_in_daemon_thread(
        lambda: upload_sftp(
            grant.access, grant.keypair.private_pem, dump, host_key=check, progress=progress
        )
    )


def accept_first_host_key(_: str) -> None:
    """A host key seen on first use: nothing to record for a one-off upload."""


def print_transfer(result: TransferResult, json_output: bool, **extra: str) -> None:
    data: dict[str, Any] = {**result.to_json(), **extra}
    if json_output:
        print_json(data)
    else:
        details = ", ".join(f"{k} {v}" for k, v in extra.items())
        click.echo(
            f"transferred {result.bytes} bytes in {result.attempts} attempt(s), "
            f"sha256 {result.sha256}" + (f", {details}" if details else "")
        )


@cli.command("sftp-access")
@request_option
@key_file_option
@click.option(
    "--ssh-keys",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    required=True,
    help="authorized_keys-style file with the public keys to let in.",
)
@json_option
@click.pass_context
def sftp_access(
    ctx: click.Context, request_id: int, key_file: Path | None, ssh_keys: Path, json_output: bool
) -> None:
    """Open the request's SFTP server to your SSH keys.

    Then upload with `sftp put -a` (resumes), or `get` the upgraded dump once done.
    """
    with exit_on_errors(json_output=json_output):
        key = request_key(key_file)
        keys_text = ssh_keys.read_text(encoding="utf-8")
        access = run_async(
            with_client(
                platform_url(ctx),
                lambda client: client.request_sftp_access(request_id, key, keys_text),
            )
        )
        data = {
            "hostname": access.hostname,
            "sftp_port": access.port,
            "sftp_user": access.user,
            "shared_file": access.shared_file,
            "request_id": access.request_id,
            "sample_command": access.sample_command,
        }
        if json_output:
            print_json(data)
        else:
            for name, value in data.items():
                click.echo(f"{name + ':':16}{value}")


optional_request_option = click.option(
    "--request",
    "request_id",
    type=click.IntRange(min=1),
    envvar="ODOO_UPGRADE_REQUEST",
    help="Request id (env ODOO_UPGRADE_REQUEST); or --token-from STATE.",
)


def request_or_state(request_id: int | None, state_file: Path | None) -> RunState | None:
    """The state file's request, None for --request (database-v1), or a usage error."""
    if state_file is not None:
        if request_id is not None:
            raise UsageProblem("pass either --request or --token-from, not both")
        return request_from_state(state_file)
    if request_id is None:
        raise UsageProblem(
            "missing --request ID (with --key-file), or --token-from STATE (the state file of "
            "`run`, the only way to address an upgrade-request request)"
        )
    return None


@cli.command()
@optional_request_option
@key_file_option
@token_from_option
@json_option
@click.pass_context
def process(
    ctx: click.Context,
    request_id: int | None,
    key_file: Path | None,
    state_file: Path | None,
    json_output: bool,
) -> None:
    """Ask the platform to upgrade the uploaded dump."""
    with exit_on_errors(json_output=json_output):
        state = request_or_state(request_id, state_file)
        facts: dict[str, Any] = {}
        if state is None:
            assert request_id is not None
            key, number = request_key(key_file), request_id
            run_async(with_client(platform_url(ctx), lambda client: client.process(number, key)))
        else:
            request_id = state.request_id
            facts = run_async(with_platform(state, lambda p, ref: p.process(ref)))
        if json_output:
            print_json({"request_id": request_id, "processing": True, **facts})
        else:
            click.echo(f"request {request_id}: processing requested")
            if facts.get("pgVersionCompatible") is False:
                click.echo(
                    "warning: the upgraded dump cannot be restored on the PostgreSQL version "
                    "of the uploaded dump",
                    err=True,
                )


@cli.command()
@optional_request_option
@key_file_option
@token_from_option
@json_option
@click.option(
    "--show-urls",
    is_flag=True,
    help="With --json, include the download URLs. They embed the key: treat them as secrets.",
)
@click.pass_context
def status(
    ctx: click.Context,
    request_id: int | None,
    key_file: Path | None,
    state_file: Path | None,
    json_output: bool,
    show_urls: bool,
) -> None:
    """Show the request as the platform sees it.

    Never its URLs (they embed the key) unless --json --show-urls.
    """
    with exit_on_errors(json_output=json_output):
        state = request_or_state(request_id, state_file)
        if state is not None:
            print_platform_status(state, json_output)
            return
        assert request_id is not None
        key = request_key(key_file)
        request = run_async(
            with_client(platform_url(ctx), lambda client: client.status(request_id, key))
        )
        data: dict[str, Any] = {
            "id": request.id,
            "target": request.target,
            "aim": request.aim,
            "filename": request.filename,
            **request.public_view(),
        }
        if json_output:
            if show_urls:
                data["urls"] = {
                    name: getattr(request, name)
                    for name in (
                        "status_url",
                        "notes_url",
                        "original_sql_url",
                        "original_dump_url",
                        "upgraded_sql_url",
                        "upgraded_dump_url",
                        "modules_url",
                    )
                }
            print_json(data)
        else:
            for name, value in data.items():
                if isinstance(value, list):
                    value = ", ".join(value)
                click.echo(redact(f"{name + ':':18}{value}"))


@cli.command()
@request_option
@key_file_option
@click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="Where to write the upgraded dump; never overwritten; <output>.sha256 beside it.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["archive", "sql"]),
    default="archive",
    show_default=True,
)
@click.option(
    "--transport",
    type=click.Choice(["https", "sftp"]),
    default="https",
    show_default=True,
    help="sftp: a fresh SSH key pair is let in with request_sftp_access (the request is done) "
    "and upgraded_<filename> fetched; the archive only.",
)
@click.option(
    "--host-key",
    help="With --transport sftp: the expected host key (`ssh-ed25519 AAAA…`); default: trust "
    "the key seen first.",
)
@json_option
@progress_option
@click.pass_context
def download(
    ctx: click.Context,
    request_id: int,
    key_file: Path | None,
    output: Path,
    fmt: str,
    transport: str,
    host_key: str | None,
    json_output: bool,
    no_progress: bool,
) -> None:
    """Download the upgraded dump of a finished request.

    A partial download left by an interrupted run of this request is resumed.
    """
    with exit_on_errors(json_output=json_output):
        from odoo_upgrade.progress import TransferProgress
        from odoo_upgrade.runflow import UpgradeInvalid
        from odoo_upgrade.transfer import DownloadBinding, download_https

        key = request_key(key_file)
        if transport == "sftp" and fmt != "archive":
            raise UsageProblem(
                f"--transport sftp downloads the archive only (upgraded_<filename>); --format "
                f"{fmt} is downloaded over https"
            )
        if output.exists():
            raise UsageProblem(f"--output {output} exists already; it is never overwritten")
        url = platform_url(ctx)
        request = run_async(with_client(url, lambda client: client.status(request_id, key)))
        if request.state == "invalid":
            raise UpgradeInvalid(request_id, request.customer_message)
        if not request.succeeded:
            raise click.ClickException(
                f"request {request_id} is `{request.state}`: nothing to download yet"
            )
        progress = TransferProgress("download", enabled=not no_progress)
        binding = DownloadBinding(str(request_id))
        if transport == "sftp":
            result = run_async(
                download_sftp_step(url, request_id, key, output, host_key, binding, progress)
            )
        else:
            from odoo_upgrade.request.upgraded import upgraded_url

            dump_url = upgraded_url(request, fmt)
            if not dump_url:
                raise click.ClickException(
                    f"the platform offers no {fmt} download for {request_id}"
                )
            result = run_async(download_https(dump_url, output, progress=progress, binding=binding))
        progress.finish()
        print_transfer(result, json_output, output=str(output), transport=transport)


async def download_sftp_step(
    url: str,
    request_id: int,
    key: str,
    output: Path,
    host_key: str | None,
    binding: DownloadBinding,
    progress: Callable[[int, int | None], None],
) -> TransferResult:
    from odoo_upgrade.request.sftp_grant import grant_sftp_access, host_key_check
    from odoo_upgrade.request.upgraded import upgraded_sftp_name
    from odoo_upgrade.runflow import run_in_daemon_thread
    from odoo_upgrade.transfer import download_sftp

    grant = await with_client(url, lambda client: grant_sftp_access(client, request_id, key))
    check = host_key_check(host_key, None, accept_first_host_key)
    return await run_in_daemon_thread(
        lambda: download_sftp(
            grant.access,
            grant.keypair.private_pem,
            upgraded_sftp_name(grant.access.shared_file),
            output,
            host_key=check,
            binding=binding,
            progress=progress,
        )
    )


def print_platform_status(state: RunState, json_output: bool) -> None:
    """`status --token-from`: the public view of the request, whichever its API."""
    current = run_async(with_platform(state, lambda p, ref: p.status(ref)))
    data: dict[str, Any] = {
        "id": state.request_id,
        "api": state.api,
        "target": state.target,
        "aim": state.aim,
        **{k: v for k, v in current.public.items() if v is not None},
    }
    if json_output:
        print_json(data)
        return
    for name, value in data.items():
        if isinstance(value, list):
            value = ", ".join(value)
        click.echo(redact(f"{name + ':':18}{value}"))


@cli.command("log", epilog=EXIT_CODES_HELP)
@token_from_option
@click.option(
    "--from-byte",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Print the log from this byte on (a previous call's end, to tail it).",
)
@click.option(
    "--follow",
    "-f",
    is_flag=True,
    help="Keep printing what the platform adds until the request is final.",
)
@click.option(
    "--interval",
    type=click.FloatRange(min=0.1),
    default=5.0,
    show_default=True,
    help="Seconds between two looks with --follow.",
)
def log_command(state_file: Path | None, from_byte: int, follow: bool, interval: float) -> None:
    """Print the platform's upgrade log of an upgrade-request request (--follow to tail it).

    The log goes to stdout as the platform serves it; where it ends is said on stderr.
    """
    with exit_on_errors(json_output=False):
        if state_file is None:
            raise UsageProblem("missing --token-from STATE (the state file of `run`)")
        state = request_from_state(state_file)
        if state.api != PlatformApi.UPGRADE_REQUEST:
            raise UsageProblem(
                f"--token-from {state_file}: request {state.request_id} is a {state.api} "
                "request; only upgrade-request serves a log"
            )
        end = run_async(
            with_platform(state, lambda p, ref: follow_log(p, ref, from_byte, follow, interval))
        )
        click.echo(f"log of request {state.request_id}: {end} bytes", err=True)


async def follow_log(
    platform: Platform, ref: RequestRef, offset: int, follow: bool, interval: float
) -> int:
    """Print the log from `offset`; with `follow`, until the request is final and read whole.

    Returns the offset reached."""
    while True:
        final = follow and platform.states.is_final((await platform.status(ref)).state)
        while True:
            text, offset = await platform.log_tail(ref, offset)
            if not text:
                break
            click.echo(redact(text), nl=False)
        if not follow or final:
            return offset
        await asyncio.sleep(interval)


@cli.command(epilog=EXIT_CODES_HELP)
@token_from_option
@click.option(
    "--contract-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="File holding your contract reference (or set ODOO_UPGRADE_CONTRACT).",
)
@click.option(
    "--yes",
    is_flag=True,
    help="Confirm: the dumps the platform keeps for the contract are deleted for good.",
)
@json_option
def wipe(state_file: Path | None, contract_file: Path | None, yes: bool, json_output: bool) -> None:
    """Delete the dumps the platform keeps for your contract (upgrade-request; needs --yes).

    Any request of the contract names it; --token-from gives the one of a `run`.
    """
    with exit_on_errors(json_output=json_output):
        if state_file is None:
            raise UsageProblem("missing --token-from STATE (the state file of `run`)")
        if not yes:
            raise UsageProblem("wipe deletes the platform's dumps of the contract: pass --yes")
        state = request_from_state(state_file)
        if state.api != PlatformApi.UPGRADE_REQUEST:
            raise UsageProblem(
                f"--token-from {state_file}: wipe exists on upgrade-request only (request "
                f"{state.request_id} is {state.api})"
            )
        contract = read_secret_value(
            contract_file, "ODOO_UPGRADE_CONTRACT", "contract", "--contract-file"
        )
        result = run_async(wipe_contract(state, contract))
        if json_output:
            print_json({"wiped": result.wiped, "failed": result.failed})
        else:
            click.echo(f"wiped: {', '.join(result.wiped) or '-'}")
            if result.failed:
                click.echo(f"not wiped (still in progress): {', '.join(result.failed)}")


async def wipe_contract(state: RunState, contract: str) -> Any:
    from odoo_upgrade.platform.upgrade_request_platform import UpgradeRequestPlatform

    async def wipe_it(platform: Platform, ref: RequestRef) -> Any:
        assert isinstance(platform, UpgradeRequestPlatform)
        return await platform.client(ref.host).wipe(contract, ref.secret)

    return await with_platform(state, wipe_it)


def main() -> None:
    """Console entry point of `odoo-upgrade`."""
    cli.main(prog_name="odoo-upgrade")
