"""`odoo-upgrade-emulator`: the local Upgrade Platform's command line."""

from __future__ import annotations

import asyncio
import logging
import sys
import tempfile
from pathlib import Path

import click

from odoo_upgrade.database.connection import settings_from_url
from odoo_upgrade.emulator.config import DEFAULT_TARGETS, SAMPLE_CONTRACT, EmulatorConfig
from odoo_upgrade.emulator.server import serve
from odoo_upgrade.redact import install_log_redaction


def parse_port_range(value: str | None) -> tuple[int, int] | None:
    """`"32768-60999"` -> (32768, 60999); a clear usage error for anything else."""
    if value is None:
        return None
    low, _, high = value.partition("-")
    if not (low.isdigit() and high.isdigit() and 0 < int(low) <= int(high) < 65536):
        raise click.BadParameter(f"expected LOW-HIGH ports such as 32768-60999, got {value!r}")
    return int(low), int(high)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", default=8080, show_default=True, help="HTTP port (0: any free port).")
@click.option("--sftp-port", default=2200, show_default=True, help="SFTP port (0: any free).")
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where requests, dumps and calls.jsonl live (default: a new temp dir).",
)
@click.option(
    "--public-url", default=None, help="Base of the URLs handed out (default: http://HOST:PORT)."
)
@click.option(
    "--contract",
    "contracts",
    multiple=True,
    help=f"A valid contract reference; repeatable (default: {SAMPLE_CONTRACT}).",
)
@click.option(
    "--targets",
    default=",".join(DEFAULT_TARGETS),
    show_default=True,
    help="Comma-separated target versions accepted by create.",
)
@click.option(
    "--process-seconds",
    type=float,
    default=10.0,
    show_default=True,
    help="Simulated time from process to done (0: done at once).",
)
@click.option(
    "--fail-rate",
    type=click.FloatRange(0, 1),
    default=0.0,
    show_default=True,
    help="Fraction of API calls answered 503 SERVER:ERROR before acting.",
)
@click.option(
    "--drop-after-bytes",
    type=click.IntRange(min=0),
    default=None,
    help="Cut each upload/download connection once after this many bytes.",
)
@click.option(
    "--latency",
    type=float,
    default=0.0,
    show_default=True,
    help="Seconds added to each API answer.",
)
@click.option(
    "--bandwidth",
    type=click.IntRange(min=1),
    default=None,
    metavar="BYTES_PER_SECOND",
    help="Receive v1 uploads (HTTPS and SFTP) no faster than this, as a slow link would.",
)
@click.option(
    "--fault-seed",
    type=int,
    default=None,
    help="Seed of the --fail-rate dice, for reproducible runs.",
)
@click.option(
    "--postgres-url",
    envvar="ODOO_UPGRADE_EMULATOR_POSTGRES_URL",
    default=None,
    help="Scratch PostgreSQL server for directory-format upgrades, "
    "postgresql://USER:PASSWORD@HOST:PORT/DB (better in $ODOO_UPGRADE_EMULATOR_POSTGRES_URL: "
    "a password on the command line is visible to every user).",
)
@click.option(
    "--assigned-host",
    default=None,
    help="host:port that upgrade/request `create` assigns (default: this emulator's own).",
)
@click.option(
    "--rsync-port-range",
    default=None,
    metavar="LOW-HIGH",
    callback=lambda _ctx, _param, value: parse_port_range(value),
    help="Ports for upgrade/request transfer windows, e.g. 32768-60999 (default: any free).",
)
def main(
    host: str,
    port: int,
    sftp_port: int,
    data_dir: Path | None,
    public_url: str | None,
    contracts: tuple[str, ...],
    targets: str,
    process_seconds: float,
    fail_rate: float,
    drop_after_bytes: int | None,
    latency: float,
    bandwidth: int | None,
    fault_seed: int | None,
    postgres_url: str | None,
    assigned_host: str | None,
    rsync_port_range: tuple[int, int] | None,
) -> None:
    """Run a local Odoo Upgrade Platform (v1 API over HTTP, and SFTP; the upgrade/request
    API with rsync over SSH)."""
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # paramiko logs every aborted handshake (port probes too) as ERROR tracebacks.
    logging.getLogger("paramiko").setLevel(logging.CRITICAL)
    install_log_redaction()
    if postgres_url:
        try:
            settings_from_url(postgres_url)  # checks the URL's shape, registers its password
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--postgres-url") from None
    config = EmulatorConfig(
        host=host,
        port=port,
        sftp_port=sftp_port,
        data_dir=data_dir or Path(tempfile.mkdtemp(prefix="odoo-upgrade-emu-")),
        public_url=public_url,
        contracts=contracts or (SAMPLE_CONTRACT,),
        targets=tuple(t.strip() for t in targets.split(",") if t.strip()),
        process_seconds=process_seconds,
        fail_rate=fail_rate,
        drop_after_bytes=drop_after_bytes,
        latency=latency,
        bandwidth=bandwidth,
        fault_seed=fault_seed,
        postgres_url=postgres_url or None,
        assigned_host=assigned_host,
        rsync_port_range=rsync_port_range,
    )
    asyncio.run(serve(config))


if __name__ == "__main__":
    main()
