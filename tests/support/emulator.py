"""`RunningEmulator`: the emulator as a real subprocess on free loopback ports, for tests.

    with RunningEmulator(process_seconds=1, drop_after_bytes=4096) as emu:
        answer = emu.api("create", contract=emu.contract, email="a@b.c", target="18.0",
                         aim="test", filename="db.dump")
        ...
        emu.restart(fail_rate=0.5)            # same data dir and ports, new flags

Also here: `write_sample_dump`, small dumps in each format the emulator recognises.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path
from types import TracebackType
from typing import Any

REPO = Path(__file__).resolve().parents[2]
SAMPLE_CONTRACT = "M123456-abcdef"
START_TIMEOUT = 30.0


def _flag_args(flags: dict[str, Any]) -> list[str]:
    """Python keyword flags -> CLI arguments (`fail_rate=0.5` -> `--fail-rate 0.5`)."""
    args: list[str] = []
    for name, value in flags.items():
        if value is None:
            continue
        option = "--" + name.replace("_", "-")
        if name in ("contracts", "contract"):
            values = [value] if isinstance(value, str) else list(value)
            for contract in values:
                args += ["--contract", contract]
        elif name == "targets" and not isinstance(value, str):
            args += ["--targets", ",".join(value)]
        else:
            args += [option, str(value)]
    return args


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


class RunningEmulator:
    """`python -m odoo_upgrade.emulator` in a subprocess, bound to free ports on 127.0.0.1.

    `flags` are the emulator's CLI flags as keywords (`process_seconds=1`, `fail_rate=1.0`,
    `drop_after_bytes=4096`, `latency=0.2`, `contracts=[...]`, `targets=[...]`,
    `public_url=...`, `fault_seed=1`). The process starts in `__init__`.
    """

    def __init__(self, data_dir: Path | str | None = None, *, port: int = 0, **flags: Any) -> None:
        self._own_dir = data_dir is None
        self.data_dir = Path(data_dir or tempfile.mkdtemp(prefix="odoo-upgrade-emu-"))
        self.host = "127.0.0.1"
        self.flags: dict[str, Any] = {"process_seconds": 1, **flags}
        self.port = port  # 0: any free port
        self.sftp_port = 0
        self.assigned_host = ""
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = self.data_dir / "emulator.log"
        self.start()

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        """Start the subprocess (on the ports of the previous run, if any) and wait for it."""
        ready = self.data_dir / "ready.json"
        ready.unlink(missing_ok=True)
        args = [
            sys.executable,
            "-m",
            "odoo_upgrade.emulator",
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--sftp-port",
            str(self.sftp_port),
            "--data-dir",
            str(self.data_dir),
            *_flag_args(self.flags),
        ]
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO / "operator"), env.get("PYTHONPATH")) if p
        )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(args, stdout=log, stderr=log, env=env)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"emulator exited with {self.process.returncode}:\n{self.log()}")
            if ready.exists():
                info = json.loads(ready.read_text())
                self.port, self.sftp_port = int(info["http_port"]), int(info["sftp_port"])
                self.assigned_host = str(info.get("assigned_host") or f"{self.host}:{self.port}")
                if _accepts(self.host, self.port) and _accepts(self.host, self.sftp_port):
                    return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"emulator did not start within {START_TIMEOUT}s:\n{self.log()}")

    def stop(self) -> None:
        """Stop the subprocess (SIGTERM, then SIGKILL after 10 s). Idempotent."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def kill(self) -> None:
        """Stop the subprocess abruptly (SIGKILL), as a crash would."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def restart(self, **new_flags: Any) -> None:
        """Stop, then start again with the same data dir and ports; `new_flags` override."""
        self.stop()
        self.flags.update(new_flags)
        self.start()

    def __enter__(self) -> RunningEmulator:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- addresses -----------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The HTTP base, e.g. `http://127.0.0.1:41234` (API under /database/v1/)."""
        return f"http://{self.host}:{self.port}"

    def method_url(self, method: str) -> str:
        return f"{self.url}/database/v1/{method}"

    @property
    def contract(self) -> str:
        """A contract the emulator accepts."""
        contracts = self.flags.get("contracts") or self.flags.get("contract") or SAMPLE_CONTRACT
        return contracts if isinstance(contracts, str) else next(iter(contracts))

    def host_key_line(self) -> str:
        """The SFTP host key as `ssh-ed25519 AAAA…` (without comment)."""
        text = (self.data_dir / "ssh_host_ed25519_key.pub").read_text().split()
        return f"{text[0]} {text[1]}"

    def known_hosts_line(self) -> str:
        """A known_hosts line for the SFTP server: `[127.0.0.1]:<port> ssh-ed25519 AAAA…`."""
        return f"[{self.host}]:{self.sftp_port} {self.host_key_line()}"

    # -- observations --------------------------------------------------------------------

    def calls(self, method: str | None = None) -> list[dict[str, Any]]:
        """API calls answered so far (calls.jsonl), optionally only those of `method`."""
        path = self.data_dir / "calls.jsonl"
        if not path.exists():
            return []
        entries = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        return [e for e in entries if method is None or e["method"] == method]

    def request_record(self, request_id: int) -> dict[str, Any]:
        """The persisted request (requests/<id>/request.json), as stored by the emulator."""
        data: dict[str, Any] = json.loads(
            (self.data_dir / "requests" / str(request_id) / "request.json").read_text()
        )
        return data

    def original_path(self, request_id: int) -> Path:
        """Where the emulator keeps the dump uploaded for `request_id`."""
        return self.data_dir / "requests" / str(request_id) / "original"

    def upgraded_path(self, request_id: int) -> Path:
        """The upgraded archive (what `upgraded_dump_url` and SFTP `upgraded_<file>` serve)."""
        return self.data_dir / "requests" / str(request_id) / "upgraded.zip"

    def upgraded_bytes(self, request_id: int) -> bytes:
        return self.upgraded_path(request_id).read_bytes()

    def upgraded_sql_bytes(self, request_id: int) -> bytes:
        """What `upgraded_sql_url` serves: `dump.sql` of the upgraded archive."""
        with zipfile.ZipFile(self.upgraded_path(request_id)) as archive:
            return archive.read("dump.sql")

    def log(self) -> str:
        """The emulator's stderr so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    # -- a tiny client, for tests that are not about the client --------------------------

    def api(self, method: str, *, http_method: str = "GET", **params: Any) -> dict[str, Any]:
        """Call `/database/v1/<method>` with `params` in the query string; the JSON answer
        whatever the HTTP status."""
        query = urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})
        url = f"{self.method_url(method)}?{query}"
        request = urllib.request.Request(url, method=http_method)  # noqa: S310 (loopback)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
                body = response.read()
        except urllib.error.HTTPError as error:
            body = error.read()
        answer: dict[str, Any] = json.loads(body)
        return answer

    def create_request(self, **overrides: Any) -> dict[str, Any]:
        """`create` with valid defaults; returns the `request` dict (raises on failures)."""
        params = {
            "contract": self.contract,
            "email": "john.doe@example.com",
            "target": "18.0",
            "aim": "test",
            "filename": "db_name.dump",
            **overrides,
        }
        answer = self.api("create", **params)
        if answer.get("failures"):
            raise AssertionError(f"create failed: {answer['failures']}")
        request: dict[str, Any] = answer["request"]
        return request

    def upload(self, request_id: int, key: str, data: bytes) -> dict[str, Any]:
        """`upload` with `data` as the raw body (application/octet-stream)."""
        query = urllib.parse.urlencode({"request": request_id, "key": key})
        request = urllib.request.Request(  # noqa: S310 (loopback http only)
            f"{self.method_url('upload')}?{query}",
            data=data,
            method="POST",
            headers={"Content-Type": "application/octet-stream"},
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310
                body = response.read()
        except urllib.error.HTTPError as error:
            body = error.read()
        answer: dict[str, Any] = json.loads(body)
        return answer

    def wait_for_state(
        self, request_id: int, key: str, *states: str, timeout: float = 60.0
    ) -> dict[str, Any]:
        """Poll `status` until the state is one of `states`; returns the `request` dict."""
        deadline = time.monotonic() + timeout
        while True:
            request: dict[str, Any] = self.api("status", request=request_id, key=key)["request"]
            if request["state"] in states or time.monotonic() > deadline:
                return request
            time.sleep(0.1)

    # -- the upgrade/request API ---------------------------------------------------------

    def request_api(self, method: str, **params: Any) -> dict[str, Any]:
        """POST `/upgrade/request/<method>` with a JSON-RPC envelope; the whole answer."""
        body = json.dumps({"jsonrpc": "2.0", "method": "not_used", "params": params, "id": 1})
        request = urllib.request.Request(  # noqa: S310 (loopback http only)
            f"{self.url}/upgrade/request/{method}",
            data=body.encode(),
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
                answer: dict[str, Any] = json.loads(response.read())
        except urllib.error.HTTPError as error:
            answer = json.loads(error.read())
        return answer

    def request_dir(self, request_id: int) -> Path:
        """Where an upgrade/request request lives (`request.json`, `data/` = its /data/)."""
        return self.data_dir / "upgrade-requests" / str(request_id)

    def request_data(self, request_id: int) -> Path:
        """What the request's SSH user sees as `/data/`."""
        return self.request_dir(request_id) / "data"

    def cancel_request(self, request_id: int) -> dict[str, Any]:
        """The admin hook `POST /emulator/requests/<id>/cancel`; the JSON answer."""
        request = urllib.request.Request(  # noqa: S310 (loopback http only)
            f"{self.url}/emulator/requests/{request_id}/cancel", data=b"", method="POST"
        )
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            answer: dict[str, Any] = json.loads(response.read())
        return answer


def write_directory_dump(path: Path, *, size: int = 64 * 1024, pg_version: str = "15.4") -> Path:
    """A directory shaped like `pg_dump --format d`: `toc.dat` (a pg_dump header the emulator
    reads) and two data files; returns `path`."""
    path.mkdir(parents=True)
    (path / "toc.dat").write_bytes(_pgdmp_header(pg_version) + b"-- Odoo version 16.0\n")
    (path / "3001.dat.gz").write_bytes(gzip.compress(bytes(i % 251 for i in range(size)), mtime=0))
    (path / "3002.dat.gz").write_bytes(gzip.compress(b"partner data\n" * 100, mtime=0))
    return path


def sample_dump_bytes(
    kind: str = "pgdmp",
    *,
    size: int = 64 * 1024,
    odoo_version: str = "16.0",
    pg_version: str = "14.5",
) -> bytes:
    """A small dump the emulator recognises: `pgdmp`, `sql`, `zip` (dump.sql + manifest.json,
    with a filestore file) or `gzip` (gzipped SQL). Padded to about `size` bytes."""
    sql_head = (
        f"--\n-- PostgreSQL database dump\n--\n\n-- Dumped from database version "
        f"{pg_version}\n-- Odoo version {odoo_version}\n\nSET statement_timeout = 0;\n"
    )
    filler = "".join(
        f"INSERT INTO res_partner VALUES ({i}, 'partner {i}');\n"  # noqa: S608 (sample data)
        for i in range(size // 40 + 1)
    )
    sql = (sql_head + filler).encode()[: max(size, len(sql_head))]
    if kind == "sql":
        return sql
    if kind == "gzip":
        return gzip.compress(sql, mtime=0)
    if kind == "zip":
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            archive.writestr("dump.sql", sql)
            archive.writestr(
                "manifest.json",
                json.dumps({"version": odoo_version, "pg_version": pg_version.split(".")[0]}),
            )
            archive.writestr("filestore/ab/abcdef", b"attachment")
        return buffer.getvalue()
    if kind == "pgdmp":
        return (
            _pgdmp_header(pg_version)
            + f"-- Odoo version {odoo_version}\n".encode()
            + bytes((i * 7) % 251 for i in range(size))
        )
    raise ValueError(f"unknown sample dump kind {kind!r}: expected pgdmp, sql, zip or gzip")


def _pgdmp_header(pg_version: str) -> bytes:
    """A pg_dump custom-format header (archive version 1.14) naming `pg_version`."""

    def int_(value: int) -> bytes:
        return b"\x00" + value.to_bytes(4, "little")

    def str_(text: str) -> bytes:
        return int_(len(text)) + text.encode()

    head = b"PGDMP" + bytes([1, 14, 0, 4, 8, 1]) + int_(0)  # compression level
    head += b"".join(int_(v) for v in (0, 0, 12, 1, 0, 124, 0))
    return head + str_("odoo") + str_(pg_version) + str_(pg_version)


def write_sample_dump(path: Path, kind: str = "pgdmp", **options: Any) -> Path:
    """Write `sample_dump_bytes(kind, **options)` to `path`; returns `path`."""
    path.write_bytes(sample_dump_bytes(kind, **options))
    return path
