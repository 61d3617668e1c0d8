"""Run the operator as a real process against the test cluster: start, SIGKILL, restart, logs.

The operator is started the way a user starts it (`odoo-upgrade operator --all-namespaces`), with
the cluster's kubeconfig, its log in a file that survives restarts (appended), and its metrics and
liveness endpoints on free loopback ports.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from tests.harness.ports import free_port
from tests.support.platform_ports import allowlist_args

BIN_DIR = Path(sys.executable).parent


class OperatorNotReady(RuntimeError):
    """The operator process exited or never answered its liveness probe."""


class RunningOperator:
    """One operator process (restartable), logging to `log_path`."""

    def __init__(
        self,
        kubeconfig: Path,
        log_path: Path,
        *,
        namespaces: Sequence[str] = (),
        extra_args: Sequence[str] = (),
    ) -> None:
        self.kubeconfig = Path(kubeconfig)
        self.log_path = Path(log_path)
        self.namespaces = tuple(namespaces)
        self.extra_args = tuple(extra_args)
        self.metrics_port = free_port()
        self.liveness_port = free_port()
        self.starts = 0
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    @property
    def liveness_url(self) -> str:
        return f"http://127.0.0.1:{self.liveness_port}/healthz"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def command(self) -> list[str]:
        """The operator's command line: the installed entrypoint, as in the image."""
        scope = (
            [arg for ns in self.namespaces for arg in ("--namespace", ns)]
            if self.namespaces
            else ["--all-namespaces"]
        )
        return [
            str(BIN_DIR / "odoo-upgrade"),
            "operator",
            *scope,
            "--metrics-port",
            str(self.metrics_port),
            "--liveness",
            self.liveness_url,
            *allowlist_args(),
            *self.extra_args,
        ]

    def start(self, *, timeout: float = 60.0) -> RunningOperator:
        """Start the process and wait until its liveness endpoint answers."""
        if self.alive():
            return self
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "PYTHONUNBUFFERED": "1",
            "PATH": f"{BIN_DIR}{os.pathsep}{os.environ.get('PATH', '')}",
        }
        with self.log_path.open("ab") as log:
            log.write(f"--- start #{self.starts + 1}: {' '.join(self.command())}\n".encode())
            log.flush()
            self._process = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        self.starts += 1
        self._wait_ready(timeout)
        return self

    def alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def returncode(self) -> int | None:
        """The exit status once the process has exited (negative: killed by that signal)."""
        return self._process.poll() if self._process is not None else None

    def kill(self) -> None:
        """SIGKILL: no cleanup, no last status patch — what a node failure does."""
        if self._process is None:
            return
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGKILL)
        self._process.wait(timeout=30)

    def stop(self, *, grace: float = 15.0) -> None:
        """SIGTERM, then SIGKILL if it does not exit within `grace` seconds."""
        if self._process is None or self._process.poll() is not None:
            return
        self._process.send_signal(signal.SIGTERM)
        try:
            self._process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            self.kill()

    def restart(self, *, timeout: float = 60.0) -> RunningOperator:
        """Kill (if running) and start again, appending to the same log."""
        self.kill()
        return self.start(timeout=timeout)

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = 60) -> str:
        tail = "\n".join(self.logs().splitlines()[-lines:])
        return f"operator log tail ({self.log_path}):\n{tail}"

    def metrics(self) -> str:
        """The Prometheus text the operator serves."""
        with urllib.request.urlopen(self.metrics_url, timeout=10) as answer:  # noqa: S310
            return str(answer.read().decode())

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise OperatorNotReady(f"operator exited early\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.liveness_url, timeout=2) as answer:  # noqa: S310
                    if answer.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.3)
        raise OperatorNotReady(f"operator not live after {timeout:.0f}s\n{self.log_tail()}")

    def __enter__(self) -> RunningOperator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
