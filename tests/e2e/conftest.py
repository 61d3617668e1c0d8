"""Fixtures for e2e tests: a real control plane (etcd, kube-apiserver, kube-controller-manager)
plus the pod runner, started once per session on free loopback ports.

``cluster`` is a :class:`tests.harness.local_cluster.LocalCluster`. With
``ODOO_UPGRADE_KUBECONFIG`` pointing at a running ``make cluster``'s ``.cluster/kubeconfig``, that
cluster is reused instead (and left running). Missing binaries fail the session with the command
that builds them: an e2e run that silently skips proves nothing.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness.cluster import (
    ClusterStartFailed,
    ControlPlaneMissing,
    find_binaries,
    start_cluster,
)
from tests.harness.local_cluster import LocalCluster
from tests.harness.postgres import PostgresServer, load_recorded, start_postgres


@pytest.fixture(scope="session")
def cluster() -> Iterator[LocalCluster]:
    """The session's control plane (see module docstring)."""
    reused = os.environ.get("ODOO_UPGRADE_KUBECONFIG")
    if reused:
        state_dir = Path(reused).resolve().parent
        server = (state_dir / "server").read_text().strip()
        version = find_binaries().kubernetes_version
        yield LocalCluster(state_dir, server, version)
        return
    try:
        binaries = find_binaries()
    except ControlPlaneMissing as error:
        pytest.fail(f"{error} (e2e tests need the control plane)", pytrace=False)
    # Not under pytest's tmp_path: a short, stable prefix keeps paths readable in pod logs.
    state_dir = Path(tempfile.mkdtemp(prefix="odoo-upgrade-e2e-"))
    try:
        running = start_cluster(state_dir, binaries=binaries, die_with_parent=True)
    except ClusterStartFailed as error:
        pytest.fail(f"control plane did not start (logs in {state_dir}/logs): {error}")
    try:
        yield LocalCluster(state_dir, running.server, running.kubernetes_version)
    finally:
        running.stop()
        # Keep the logs for a post-mortem; the rest (etcd data, volumes, keys) goes.
        for child in state_dir.iterdir():
            if child.name != "logs":
                if child.is_dir():
                    shutil.rmtree(child, ignore_errors=True)
                else:
                    child.unlink(missing_ok=True)


@pytest.fixture(scope="session")
def postgres(cluster: LocalCluster) -> Iterator[PostgresServer]:
    """The cluster's PostgreSQL server (tests/harness/postgres.py), data under its state dir
    (`<state>/postgres/`, credentials in `server.json`), as `make cluster` starts it: mover
    pods reach it on 127.0.0.1. Started on first use; stopped at the end if started here."""
    recorded = load_recorded(cluster.state_dir)
    running_before = recorded is not None and recorded.is_running()
    # The server runs as an unprivileged user: it must traverse the (mkdtemp, 0700) state dir.
    cluster.state_dir.chmod(cluster.state_dir.stat().st_mode | 0o011)
    server = start_postgres(cluster.state_dir)
    try:
        yield server
    finally:
        if not running_before:
            server.stop()


@pytest.fixture
def namespace(cluster: LocalCluster) -> Iterator[str]:
    """A fresh namespace (``e2e-xxxxxxxx``), deleted after the test without waiting."""
    name = cluster.create_namespace()
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)
