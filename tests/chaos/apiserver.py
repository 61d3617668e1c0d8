"""Restart the test cluster's kube-apiserver (etcd and everything else keep running).

The apiserver is found through `<state>/pids.json` (the harness records every component there
with its kernel start time), killed, and started again with the very command line it had, so
it serves the same etcd on the same port with the same certificates. `pids.json` is updated so
that `make cluster-down` (or the owning fixture) stops the new process.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

from tests.harness.cluster import REPO_ROOT, ClusterPaths, process_start_time
from tests.harness.kubeapi import admin_client

APISERVER = "kube-apiserver"


def _ready(paths: ClusterPaths, server: str) -> bool:
    try:
        with admin_client(server, paths.pki, timeout=2.0) as client:
            return client.get("/readyz").status_code == 200
    except Exception:
        return False


def restart_apiserver(
    state_dir: Path,
    server: str,
    *,
    downtime: float = 3.0,
    processes: dict[str, subprocess.Popen[bytes]] | None = None,
    timeout: float = 90.0,
) -> int:
    """SIGKILL kube-apiserver, keep it down `downtime` seconds, start it again; return its pid.

    `processes` is the harness's `RunningCluster.processes` when this session started the
    cluster: the old process is reaped and the new one put in its place, so `stop()` ends it.
    """
    paths = ClusterPaths(state_dir)
    recorded = json.loads(paths.pids.read_text())
    entry = recorded[APISERVER]
    pid = int(entry["pid"])
    if process_start_time(pid) != entry.get("start_time"):
        raise RuntimeError(f"{APISERVER} pid {pid} from {paths.pids} is not running")
    argv = [arg for arg in Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0") if arg]
    os.kill(pid, signal.SIGKILL)
    old = (processes or {}).get(APISERVER)
    if old is not None and old.pid == pid:
        old.wait(timeout=30)
    else:
        deadline = time.monotonic() + 30
        while process_start_time(pid) is not None and time.monotonic() < deadline:
            time.sleep(0.05)
    time.sleep(downtime)
    with (paths.logs / f"{APISERVER}.log").open("ab") as log:
        log.write(f"--- restarted by tests/chaos after {downtime:.0f} s down\n".encode())
        log.flush()
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=REPO_ROOT,
        )
    if processes is not None:
        processes[APISERVER] = process
    recorded[APISERVER] = {"pid": process.pid, "start_time": process_start_time(process.pid)}
    paths.pids.write_text(json.dumps(recorded, indent=2) + "\n")
    deadline = time.monotonic() + timeout
    while not _ready(paths, server):
        if process.poll() is not None:
            raise RuntimeError(f"{APISERVER} exited with {process.returncode} after restart")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{APISERVER} not ready {timeout:.0f} s after restart")
        time.sleep(0.2)
    return process.pid
