"""The emulator's settings, one field per command-line flag."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

SAMPLE_CONTRACT = "M123456-abcdef"
# The 2015 page lists 6.0-8.0; the platform today serves every major version since.
DEFAULT_TARGETS: tuple[str, ...] = ("6.0", "6.1", *(f"{major}.0" for major in range(7, 20)))


@dataclass(frozen=True)
class EmulatorConfig:
    """Everything `odoo-upgrade-emulator` can be told on its command line."""

    host: str = "127.0.0.1"
    port: int = 8080
    sftp_port: int = 2200
    data_dir: Path = field(
        default_factory=lambda: Path(tempfile.mkdtemp(prefix="odoo-upgrade-emu-"))
    )
    public_url: str | None = None
    contracts: tuple[str, ...] = (SAMPLE_CONTRACT,)
    targets: tuple[str, ...] = DEFAULT_TARGETS
    process_seconds: float = 10.0
    fail_rate: float = 0.0
    drop_after_bytes: int | None = None
    latency: float = 0.0
    bandwidth: int | None = None  # bytes per second of v1 uploads; None: as fast as they come
    fault_seed: int | None = None
    # A scratch PostgreSQL server (postgresql://user:password@host:port/db) for upgrades that
    # need one (directory-format dumps); the password is a secret.
    postgres_url: str | None = field(default=None, repr=False)
    # upgrade/request API: the host:port `create` assigns (default: the emulator's own), the
    # ports transfer windows open on (default: any free port), their inactivity timeout.
    assigned_host: str | None = None
    rsync_port_range: tuple[int, int] | None = None
    transfer_idle_seconds: float = 300.0

    def base_url(self, bound_port: int | None = None) -> str:
        """Base of every URL the emulator hands out (`--public-url`, else `http://HOST:PORT`)."""
        if self.public_url:
            return self.public_url.rstrip("/")
        return f"http://{self.host}:{bound_port if bound_port is not None else self.port}"
