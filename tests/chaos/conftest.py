"""Fixtures and session hooks of the fault suite.

`cluster` is the e2e control plane (tests/e2e/conftest.py), started here with its
`RunningCluster` kept so that a test can restart kube-apiserver. Once started it is published
through `ODOO_UPGRADE_KUBECONFIG`, which the e2e fixture honours, so `pytest tests` runs one
control plane for both directories, not two.

`CHAOS_FULL=1` (`make chaos`) runs every kill point and 20 concurrent resources, and writes the
session's figures into docs/RELIABILITY.md; without it a shortened run fits in `make test`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.chaos.apiserver import restart_apiserver
from tests.chaos.ledger import RunFigures, RunLedger
from tests.chaos.reliability_doc import render_chaos_figures, replace_section
from tests.harness.cluster import (
    ClusterStartFailed,
    ControlPlaneMissing,
    RunningCluster,
    find_binaries,
    start_cluster,
)
from tests.harness.local_cluster import LocalCluster

REUSE_ENV = "ODOO_UPGRADE_KUBECONFIG"


def chaos_full() -> bool:
    """True under `make chaos` (every kill point, 20 resources); False in `make test`."""
    return os.environ.get("CHAOS_FULL", "") not in ("", "0")


class ChaosCluster(LocalCluster):
    """The e2e cluster handle plus the one fault only this suite injects."""

    running: RunningCluster | None = None

    def restart_apiserver(self, downtime: float = 3.0) -> None:
        """Kill kube-apiserver and start it again on the same etcd, port and certificates."""
        restart_apiserver(
            self.state_dir,
            self.server,
            downtime=downtime,
            processes=self.running.processes if self.running else None,
        )


@pytest.fixture(scope="session")
def cluster() -> Iterator[ChaosCluster]:
    """The session's control plane, shared with tests/e2e (see module docstring)."""
    reused = os.environ.get(REUSE_ENV)
    if reused:
        state_dir = Path(reused).resolve().parent
        server = (state_dir / "server").read_text().strip()
        yield ChaosCluster(state_dir, server, find_binaries().kubernetes_version)
        return
    try:
        binaries = find_binaries()
    except ControlPlaneMissing as error:
        pytest.fail(f"{error} (the fault suite needs the control plane)", pytrace=False)
    state_dir = Path(tempfile.mkdtemp(prefix="odoo-upgrade-chaos-"))
    try:
        running = start_cluster(state_dir, binaries=binaries)
    except ClusterStartFailed as error:
        pytest.fail(f"control plane did not start (logs in {state_dir}/logs): {error}")
    handle = ChaosCluster(state_dir, running.server, running.kubernetes_version)
    handle.running = running
    os.environ[REUSE_ENV] = str(handle.kubeconfig)
    try:
        yield handle
    finally:
        os.environ.pop(REUSE_ENV, None)
        running.stop()
        for child in state_dir.iterdir():
            if child.name != "logs":
                if child.is_dir():
                    shutil.rmtree(child, ignore_errors=True)
                else:
                    child.unlink(missing_ok=True)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The shortened run (CHAOS_FULL unset) skips the tests marked `slow`."""
    if chaos_full():
        return
    skip = pytest.mark.skip(reason="long-running: runs under `make chaos` (CHAOS_FULL=1)")
    for item in items:
        if "slow" in item.keywords and "tests/chaos/" in item.nodeid:
            item.add_marker(skip)


@pytest.fixture
def ledger(record_property: Any) -> RunLedger:
    """Where a test records the faults it injected and the resources it verified."""
    return RunLedger(record_property)


# -- figures of the run ------------------------------------------------------------------


class FiguresCollector:
    """Sums every test's recorded figures, tests/e2e ones included.

    A plugin object, not conftest hooks: pytest calls a conftest's `pytest_runtest_*` hooks
    only for tests under its own directory, and the bad input and secret tests live in e2e/.
    """

    def __init__(self) -> None:
        self.figures = RunFigures()
        self.started = time.monotonic()

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        # The call phase, or a failed setup (its resources count as lost, not as absent).
        if report.when == "call" or (report.when == "setup" and not report.passed):
            self.figures.add(report.outcome, report.user_properties)

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        """Under `make chaos`, write the figures of this run into docs/RELIABILITY.md."""
        if not chaos_full() or (self.figures.resources == 0 and not self.figures.inputs):
            return
        duration = time.monotonic() - self.started
        replace_section("chaos", render_chaos_figures(self.figures, duration))


def pytest_configure(config: pytest.Config) -> None:
    if not config.pluginmanager.has_plugin("chaos-figures"):
        config.pluginmanager.register(FiguresCollector(), "chaos-figures")
