"""A real PostgreSQL server for tests, demos and benchmarks: initdb + pg_ctl on loopback.

    python -m tests.harness.postgres up [--state-dir .cluster]    # prints the connection
    python -m tests.harness.postgres down [--state-dir .cluster]

The server runs as an unprivileged user (PostgreSQL refuses root): the machine's `postgres`
user when we are root (created as `odoo-upgrade-pg` if there is none), else ourselves. It
listens on 127.0.0.1 on a free port, TCP only, with scram-sha-256 password authentication for
every role, so that a wrong password is refused as it would be in production. Two roles: the
superuser `postgres` and `odoo` (LOGIN CREATEDB), the role the tests' Secrets name.

Layout under `<state>/postgres/`: `data/` (PGDATA), `server.json` (mode 0600: host, port,
roles and their passwords; what `load_recorded` reads), and `<state>/logs/postgres.log`.
Durability is traded for speed (fsync off): this server holds test data only.
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tests.harness.ports import free_port

REPO = Path(__file__).resolve().parents[2]
DEFAULT_STATE_DIR = REPO / ".cluster"
SERVER_BIN_ENV = "ODOO_UPGRADE_PG_SERVER_BIN"
SUPERUSER = "postgres"
APP_USER = "odoo"
FALLBACK_OS_USER = "odoo-upgrade-pg"
START_TIMEOUT = 60.0
SERVER_SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "unix_socket_directories": "''",
    "max_connections": "60",
    "shared_buffers": "'64MB'",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "password_encryption": "'scram-sha-256'",
    "log_min_messages": "warning",
    "log_line_prefix": "'%m [%p] %q%u@%d '",
}


class PostgresStartFailed(RuntimeError):
    """The server did not come up; the message carries its log's tail."""


def server_bin_dir() -> Path:
    """The newest directory holding initdb/pg_ctl/postgres (or `$ODOO_UPGRADE_PG_SERVER_BIN`)."""
    override = os.environ.get(SERVER_BIN_ENV)
    if override:
        return Path(override)
    debian = sorted(
        (p for p in Path("/usr/lib/postgresql").glob("*/bin") if (p / "initdb").is_file()),
        key=lambda p: float(p.parent.name) if p.parent.name.replace(".", "").isdigit() else 0,
    )
    if debian:
        return debian[-1]
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    raise PostgresStartFailed(
        "no PostgreSQL server binaries (initdb, pg_ctl): run `make sysdeps` "
        "(scripts/install-system-deps.sh installs Debian's postgresql)"
    )


def _server_os_user() -> str | None:
    """Who runs the server: None (ourselves) unless we are root."""
    if os.geteuid() != 0:
        return None
    for name in (SUPERUSER, FALLBACK_OS_USER):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
         FALLBACK_OS_USER],
        check=True,
    )  # fmt: skip
    return FALLBACK_OS_USER


def _give_to(path: Path, os_user: str | None) -> None:
    if os_user is not None:
        entry = pwd.getpwnam(os_user)
        os.chown(path, entry.pw_uid, entry.pw_gid)


def _require_traversable(path: Path, os_user: str | None) -> None:
    """The server's user must reach its data dir through every parent directory."""
    if os_user is None:
        return
    for parent in path.resolve().parents:
        if not parent.stat().st_mode & 0o001:
            raise PostgresStartFailed(
                f"{parent} is not searchable by others (mode {parent.stat().st_mode & 0o777:o}):"
                f" the server's user {os_user} cannot reach {path}; use another state dir"
            )


def _reachable(path: Path, os_user: str | None) -> bool:
    try:
        _require_traversable(path, os_user)
    except PostgresStartFailed:
        return False
    return True


def _server_root(state: Path, os_user: str | None) -> Path:
    """`<state>/postgres`; or, when the server's user cannot reach into the state dir (a clone
    under a 0700 home, as root's is), a directory of its own under the system's temp dir."""
    root = state / "postgres"
    state.mkdir(parents=True, exist_ok=True)
    if _reachable(root, os_user):
        return root
    relocated = Path(tempfile.mkdtemp(prefix="odoo-upgrade-postgres-"))
    relocated.chmod(0o755)
    return relocated


@dataclass
class PostgresServer:
    """A running server's coordinates; the passwords are test passwords made at `initdb`."""

    root: str  # <state>/postgres
    log_path: str
    host: str
    port: int
    superuser_password: str
    app_user: str
    app_password: str
    bin_dir: str
    os_user: str | None

    # -- coordinates -----------------------------------------------------------------------

    @property
    def data_dir(self) -> Path:
        return Path(self.root) / "data"

    def secret_data(
        self, *, user: str | None = None, password: str | None = None
    ) -> dict[str, str]:
        """The keys of a CloudNativePG `<cluster>-app` Secret for the app role (or `user`)."""
        return {
            "host": self.host,
            "port": str(self.port),
            "username": user or self.app_user,
            "password": self.app_password if password is None else password,
            "dbname": "postgres",
        }

    def write_secret_dir(self, directory: Path, **overrides: str) -> Path:
        """The Secret as a mounted volume would show it: one file per key."""
        directory.mkdir(parents=True, exist_ok=True)
        for key, value in {**self.secret_data(), **overrides}.items():
            (directory / key).write_text(value)
        return directory

    def url(self, *, superuser: bool = True, database: str = "postgres") -> str:
        user, password = self._credentials(superuser)
        return f"postgresql://{user}:{password}@{self.host}:{self.port}/{database}"

    def _credentials(self, superuser: bool) -> tuple[str, str]:
        if superuser:
            return SUPERUSER, self.superuser_password
        return self.app_user, self.app_password

    def client_env(self, *, superuser: bool = True, database: str = "postgres") -> dict[str, str]:
        """Environment for psql/pg_dump/pg_restore run by tests (password in PGPASSWORD)."""
        user, password = self._credentials(superuser)
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update(
            PGHOST=self.host,
            PGPORT=str(self.port),
            PGUSER=user,
            PGPASSWORD=password,
            PGDATABASE=database,
            LC_MESSAGES="C",
        )
        return env

    # -- SQL -------------------------------------------------------------------------------

    def psql(
        self,
        sql: str,
        database: str = "postgres",
        *,
        superuser: bool = True,
        input_data: bytes | None = None,
    ) -> str:
        """Run `sql` (or `input_data` as a script) with psql; its unaligned tuples output."""
        args = [
            str(Path(self.bin_dir) / "psql"),
            "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", database,
        ]  # fmt: skip
        script = input_data if input_data is not None else sql.encode()
        completed = subprocess.run(
            [*args, "-f", "-"],
            input=script,
            capture_output=True,
            env=self.client_env(superuser=superuser, database=database),
            check=False,
        )
        if completed.returncode != 0:
            raise RuntimeError(
                f"psql on {database} failed ({completed.returncode}): "
                f"{completed.stderr.decode(errors='replace')}"
            )
        return completed.stdout.decode()

    def rows(self, sql: str, database: str = "postgres") -> list[list[str]]:
        out = self.psql(sql, database)
        return [line.split("|") for line in out.splitlines() if line]

    def databases(self) -> list[str]:
        return sorted(
            r[0] for r in self.rows("SELECT datname FROM pg_database WHERE NOT datistemplate")
        )

    def database_exists(self, name: str) -> bool:
        return name in self.databases()

    def drop_database(self, name: str) -> None:
        self.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def create_role(self, name: str, password: str, *options: str) -> None:
        self.psql(f"CREATE ROLE \"{name}\" LOGIN PASSWORD '{password}' {' '.join(options)}")

    # -- lifecycle -------------------------------------------------------------------------

    def _run_as_server_user(
        self, args: list[str], **kwargs: Any
    ) -> subprocess.CompletedProcess[str]:
        if self.os_user is not None:
            entry = pwd.getpwnam(self.os_user)
            # Its own group and no supplementary ones: nothing of root's reaches the server.
            kwargs.update(user=entry.pw_uid, group=entry.pw_gid, extra_groups=[])
        return subprocess.run(args, text=True, capture_output=True, check=False, **kwargs)

    def pg_ctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self._run_as_server_user(
            [str(Path(self.bin_dir) / "pg_ctl"), "-D", str(self.data_dir), *args]
        )

    def is_running(self) -> bool:
        return self.pg_ctl("status").returncode == 0

    def stop(self) -> None:
        """`pg_ctl stop -m fast`; idempotent."""
        if self.data_dir.exists() and self.is_running():
            self.pg_ctl("stop", "-m", "fast", "-w", "-t", "60")

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(Path(self.log_path).read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def __enter__(self) -> PostgresServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _record_path(state_dir: Path) -> Path:
    return state_dir / "postgres" / "server.json"


def load_recorded(state_dir: Path = DEFAULT_STATE_DIR) -> PostgresServer | None:
    """The server `up` started in `state_dir`, if it recorded one."""
    try:
        return PostgresServer(**json.loads(_record_path(state_dir).read_text()))
    except (OSError, ValueError, TypeError):
        return None


def _initdb(server: PostgresServer) -> None:
    root = Path(server.root)
    password_file = root / ".initdb-password"
    password_file.write_text(server.superuser_password + "\n")
    _give_to(password_file, server.os_user)
    password_file.chmod(0o600)
    try:
        completed = server._run_as_server_user(
            [
                str(Path(server.bin_dir) / "initdb"),
                "-D", str(server.data_dir),
                "-U", SUPERUSER,
                "--auth=scram-sha-256",
                f"--pwfile={password_file}",
                "-E", "UTF8",
                "--locale=C.UTF-8",
                "--no-sync",
            ]
        )  # fmt: skip
    finally:
        password_file.unlink(missing_ok=True)
    if completed.returncode != 0:
        raise PostgresStartFailed(f"initdb failed: {completed.stderr or completed.stdout}")
    settings = "".join(f"{k} = {v}\n" for k, v in SERVER_SETTINGS.items())
    with (server.data_dir / "postgresql.conf").open("a") as conf:
        conf.write("\n# tests/harness/postgres.py\n" + settings)


def _start(server: PostgresServer, timeout: float) -> None:
    log = Path(server.log_path)
    log.parent.mkdir(parents=True, exist_ok=True)
    log.touch()
    _give_to(log, server.os_user)
    completed = server.pg_ctl(
        "start", "-w", "-t", str(int(timeout)), "-l", str(log), "-o", f"-p {server.port}"
    )
    if completed.returncode != 0:
        raise PostgresStartFailed(
            f"pg_ctl start failed ({completed.returncode}): {completed.stderr}\n{server.log_tail()}"
        )


def start_postgres(
    state_dir: Path | str = DEFAULT_STATE_DIR, *, port: int | None = None,
    timeout: float = START_TIMEOUT,
) -> PostgresServer:  # fmt: skip
    """Start (initialising on first use) the server of `state_dir`; reuse it if it runs."""
    state = Path(state_dir)
    recorded = load_recorded(state)
    if recorded is not None and recorded.data_dir.exists():
        if recorded.is_running():
            return recorded
        _start(recorded, timeout)
        return recorded
    os_user = _server_os_user()
    root = _server_root(state, os_user)
    inside = root.resolve().is_relative_to(state.resolve())
    if root.exists() and inside:
        shutil.rmtree(root)  # a half-made server of an interrupted `up`
    root.mkdir(parents=True, exist_ok=True)
    _require_traversable(root, os_user)
    _give_to(root, os_user)
    root.chmod(0o755)
    # The server writes its log itself: beside its data when the state dir is out of its reach.
    logs = state / "logs" if inside else root
    server = PostgresServer(
        root=str(root),
        log_path=str(logs / "postgres.log"),
        host="127.0.0.1",
        port=port or free_port(),
        superuser_password=secrets.token_urlsafe(18),
        app_user=APP_USER,
        app_password=secrets.token_urlsafe(18),
        bin_dir=str(server_bin_dir()),
        os_user=os_user,
    )
    _initdb(server)
    for attempt in range(3):
        try:
            _start(server, timeout)
            break
        except PostgresStartFailed:
            # Another process may have taken the free port in between: try another one.
            if port is not None or attempt == 2 or "could not bind" not in server.log_tail():
                raise
            server.port = free_port()
    server.create_role(server.app_user, server.app_password, "CREATEDB")
    record = _record_path(state)
    record.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(record, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(asdict(server), out, indent=1)
    return server


def stop_recorded(state_dir: Path | str = DEFAULT_STATE_DIR) -> bool:
    """Stop the server recorded in `state_dir`; True if there was one."""
    state = Path(state_dir)
    server = load_recorded(state)
    if server is None:
        return False
    server.stop()
    if not Path(server.root).resolve().is_relative_to(state.resolve()):
        # Relocated out of the state dir (see _server_root): nothing else would remove it.
        shutil.rmtree(server.root, ignore_errors=True)
        _record_path(state).unlink(missing_ok=True)
    return True


@contextmanager
def temporary_postgres() -> Iterator[PostgresServer]:
    """A server in a fresh temp dir, stopped and removed afterwards."""
    state = Path(tempfile.mkdtemp(prefix="odoo-upgrade-pg-"))
    state.chmod(0o755)  # the server's user must reach its data dir
    server = start_postgres(state)
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(state, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.harness.postgres")
    parser.add_argument("action", choices=("up", "down", "status"))
    parser.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR)
    args = parser.parse_args(argv)
    if args.action == "down":
        stopped = stop_recorded(args.state_dir)
        print("postgres: stopped" if stopped else "postgres: none recorded", file=sys.stderr)
        return 0
    if args.action == "status":
        server = load_recorded(args.state_dir)
        running = server is not None and server.is_running()
        print(f"postgres: {'running' if running else 'stopped'}", file=sys.stderr)
        return 0 if running else 1
    started = time.monotonic()
    server = start_postgres(args.state_dir)
    print(
        f"postgres: {server.host}:{server.port} (roles {SUPERUSER}, {server.app_user}; "
        f"passwords in {_record_path(args.state_dir)}) up in {time.monotonic() - started:.1f}s",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
