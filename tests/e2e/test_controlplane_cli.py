"""`make cluster` / `make cluster-down` as a developer uses them (``tests.harness.cluster``)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness.cluster import REPO_ROOT, find_binaries, process_start_time
from tests.harness.kubectl import kubectl

pytestmark = pytest.mark.e2e


def harness(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tests.harness.cluster", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def test_cluster_up_runs_in_background_and_down_stops_exactly_its_processes(
    tmp_path: Path,
) -> None:
    find_binaries()  # fails with "run `make controlplane`" when they are missing
    state = tmp_path / "cluster"

    up = harness("up", "--state-dir", str(state))
    assert up.returncode == 0, up.stderr
    assert "export KUBECONFIG=" in up.stdout
    recorded = json.loads((state / "pids.json").read_text())
    assert set(recorded) == {"etcd", "kube-apiserver", "kube-controller-manager", "podrunner"}
    pids = [entry["pid"] for entry in recorded.values()]
    try:
        # The command returned, the cluster did not go with it.
        assert all(process_start_time(pid) is not None for pid in pids)
        nodes = kubectl(
            "get",
            "nodes",
            "-o",
            "name",
            env={"KUBECONFIG": str(state / "kubeconfig"), "PATH": "/usr/bin:/bin"},
        )
        assert nodes.stdout.strip() == "node/odoo-upgrade-podrunner"

        again = harness("up", "--state-dir", str(state))
        assert again.returncode == 0, again.stderr
        assert "already running" in again.stdout
        assert json.loads((state / "pids.json").read_text()) == recorded
    finally:
        down = harness("down", "--state-dir", str(state))

    assert down.returncode == 0, down.stderr
    assert all(process_start_time(pid) is None for pid in pids)
    assert sorted(p.name for p in state.iterdir()) == ["logs"]
