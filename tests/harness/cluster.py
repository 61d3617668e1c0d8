"""A real control plane on loopback: etcd, kube-apiserver, kube-controller-manager and the pod
runner, started from the binaries `make controlplane` caches.

``python -m tests.harness.cluster up [--state-dir .cluster]`` starts everything in the background
(own sessions, logs in ``<state>/logs/``), writes ``<state>/kubeconfig`` and ``<state>/pids.json``
and returns once the apiserver is ready, the controller manager works and the pod runner's Node
is registered. ``down`` stops exactly the processes recorded in ``pids.json`` and removes the
state, keeping ``logs/``.
"""

from __future__ import annotations

import argparse
import base64
import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import httpx
import yaml

from tests.harness.certs import KUBELET_CLIENT_USER, ClusterCertificates, write_certificates
from tests.harness.kubeapi import admin_client
from tests.harness.podrunner import NODE_NAME
from tests.harness.ports import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_STATE_DIR = REPO_ROOT / ".cluster"
# Order of start; `down` stops in reverse.
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "podrunner")
# State kept by `down`: the logs explain what happened after the fact.
KEPT_ON_DOWN = ("logs",)
PORT_RACE_ATTEMPTS = 3
KUBELET_API_BINDING = "odoo-upgrade-test:kube-apiserver-kubelet-api-admin"


class ControlPlaneMissing(RuntimeError):
    """The cached control-plane binaries are not there: `make controlplane` builds them."""


class ClusterStartFailed(RuntimeError):
    """A component exited or did not become ready; the message carries its log tail."""


@dataclass(frozen=True)
class Binaries:
    """Paths of the cached control-plane binaries and the Kubernetes version they are."""

    etcd: Path
    kube_apiserver: Path
    kube_controller_manager: Path
    kubernetes_version: str


def _required_version(go_mod: Path, module: str) -> str:
    for line in go_mod.read_text().splitlines():
        words = line.split()
        if len(words) >= 2 and words[0] == module and words[1].startswith("v"):
            return words[1]
    raise ControlPlaneMissing(f"{go_mod} does not require {module}")


def cache_dir() -> Path:
    """Where `scripts/build-controlplane.sh` caches binaries (``$ODOO_UPGRADE_CACHE``)."""
    configured = os.environ.get("ODOO_UPGRADE_CACHE")
    return Path(configured) if configured else Path.home() / ".cache" / "odoo-upgrade-operator"


def find_binaries() -> Binaries:
    """Locate the binaries for the versions pinned in tests/controlplane/*/go.mod."""
    modules = REPO_ROOT / "tests" / "controlplane"
    kube_version = _required_version(modules / "kube" / "go.mod", "k8s.io/kubernetes")
    etcd_version = _required_version(modules / "etcd" / "go.mod", "go.etcd.io/etcd/server/v3")
    kube_dir = cache_dir() / f"k8s-{kube_version}"
    binaries = Binaries(
        etcd=cache_dir() / f"etcd-{etcd_version}" / "etcd",
        kube_apiserver=kube_dir / "kube-apiserver",
        kube_controller_manager=kube_dir / "kube-controller-manager",
        kubernetes_version=kube_version,
    )
    missing = [
        str(path)
        for path in (binaries.etcd, binaries.kube_apiserver, binaries.kube_controller_manager)
        if not os.access(path, os.X_OK)
    ]
    if missing:
        raise ControlPlaneMissing(
            f"control-plane binaries missing ({', '.join(missing)}): run `make controlplane`"
        )
    return binaries


def process_start_time(pid: int) -> int | None:
    """The kernel's start time of ``pid`` (clock ticks since boot), None if it has exited.

    Recorded next to each pid so that `down` never signals a recycled pid.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Fields after the command name (field 2, which may contain spaces): state, ..., starttime.
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] in ("Z", "X"):
        # Exited, not yet reaped (an init that never reaps): as good as gone.
        return None
    return int(fields[19])


@dataclass(frozen=True)
class ClusterPaths:
    """The files of one cluster's state directory."""

    root: Path

    @property
    def pki(self) -> Path:
        return self.root / "pki"

    @property
    def kubeconfig(self) -> Path:
        return self.root / "kubeconfig"

    @property
    def pids(self) -> Path:
        return self.root / "pids.json"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def volumes(self) -> Path:
        return self.root / "volumes"

    @property
    def etcd_data(self) -> Path:
        return self.root / "etcd"

    @property
    def audit_log(self) -> Path:
        """One JSON line per API request (metadata only: never a Secret's data)."""
        return self.logs / "audit.log"

    @property
    def server_file(self) -> Path:
        return self.root / "server"


@dataclass
class RunningCluster:
    """A started control plane; :meth:`stop` ends exactly the processes it started."""

    paths: ClusterPaths
    server: str
    kubernetes_version: str
    processes: dict[str, subprocess.Popen[bytes]]

    def stop(self) -> None:
        """Stop every component (pod runner first, etcd last) and wait for each to exit."""
        for name in reversed(COMPONENTS):
            process = self.processes.get(name)
            if process is not None:
                _terminate(process.pid, partial(_has_exited, process))


def _has_exited(process: subprocess.Popen[bytes]) -> bool:
    return process.poll() is not None


def _is_gone(pid: int, started: int | None) -> bool:
    return process_start_time(pid) != started


def _terminate(pid: int, exited: Callable[[], bool], grace: float = 10.0) -> None:
    """SIGTERM ``pid``, wait up to ``grace`` seconds, then SIGKILL."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if exited():
            return
        time.sleep(0.05)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not exited():
        time.sleep(0.05)


def _kubeconfig(server: str, certs: ClusterCertificates) -> str:
    def b64(path: Path) -> str:
        return base64.b64encode(path.read_bytes()).decode()

    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "odoo-upgrade-test",
                "cluster": {"server": server, "certificate-authority-data": b64(certs.ca_cert)},
            }
        ],
        "users": [
            {
                "name": "admin",
                "user": {
                    "client-certificate-data": b64(certs.admin_cert),
                    "client-key-data": b64(certs.admin_key),
                },
            }
        ],
        "contexts": [
            {
                "name": "odoo-upgrade-test",
                "context": {
                    "cluster": "odoo-upgrade-test",
                    "user": "admin",
                    "namespace": "default",
                },
            }
        ],
        "current-context": "odoo-upgrade-test",
    }
    return yaml.safe_dump(config, sort_keys=False)


class _Launcher:
    """Starts components in their own sessions with logs under ``<state>/logs``."""

    def __init__(self, paths: ClusterPaths, *, die_with_parent: bool) -> None:
        self.paths = paths
        self.die_with_parent = die_with_parent
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        log = (self.paths.logs / f"{name}.log").open("ab")
        # The pod runner stops its pods on SIGTERM; the others hold only throwaway state, and
        # kube-apiserver lingers on SIGTERM once etcd is gone.
        death_signal = signal.SIGTERM if name == "podrunner" else signal.SIGKILL
        exit_with_parent = (
            partial(_exit_with_parent, death_signal) if self.die_with_parent else None
        )
        try:
            self.processes[name] = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Own session: Ctrl-C in the terminal that ran `make cluster` does not reach it.
                start_new_session=True,
                cwd=REPO_ROOT,
                env=env,
                preexec_fn=exit_with_parent,
            )
        finally:
            log.close()
        self.record()

    def record(self) -> None:
        pids = {
            name: {"pid": process.pid, "start_time": process_start_time(process.pid)}
            for name, process in self.processes.items()
        }
        self.paths.pids.write_text(json.dumps(pids, indent=2) + "\n")

    def check_alive(self) -> None:
        for name, process in self.processes.items():
            if process.poll() is not None:
                raise ClusterStartFailed(
                    f"{name} exited with {process.returncode}:\n{self.log_tail(name)}"
                )

    def log_tail(self, name: str, lines: int = 30) -> str:
        log = self.paths.logs / f"{name}.log"
        text = log.read_text(errors="replace") if log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


def _exit_with_parent(sig: signal.Signals) -> None:
    """In the child before exec: receive ``sig`` when the parent (a pytest session) dies.

    Without it a killed test run would leave etcd and kube-apiserver running forever.
    """
    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, sig)


def _wait(what: str, ready: Callable[[], bool], launcher: _Launcher, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        launcher.check_alive()
        if ready():
            return
        time.sleep(0.1)
    raise ClusterStartFailed(f"timed out after {timeout:.0f} s waiting for {what}")


def _answers(client: httpx.Client, path: str, expect: Callable[[httpx.Response], bool]) -> bool:
    try:
        return expect(client.get(path))
    except httpx.TransportError:
        return False


def start_cluster(
    state_dir: Path,
    *,
    binaries: Binaries | None = None,
    timeout: float = 90.0,
    die_with_parent: bool = False,
) -> RunningCluster:
    """Start etcd, kube-apiserver, kube-controller-manager and the pod runner on free ports.

    Returns once ``/readyz`` is ok, the controller manager has created the ``default``
    ServiceAccount and the pod runner's Node is registered. Stops what it started on failure.
    With ``die_with_parent`` the components stop when the calling process dies (test sessions);
    without, they outlive it (``make cluster``).
    """
    binaries = binaries or find_binaries()
    paths = ClusterPaths(state_dir.resolve())
    for attempt in range(1, PORT_RACE_ATTEMPTS + 1):
        try:
            return _start_once(paths, binaries, timeout, die_with_parent)
        except ClusterStartFailed as error:
            # Another process took a probed port between probe and bind: probe again.
            if "address already in use" not in str(error) or attempt == PORT_RACE_ATTEMPTS:
                raise
            shutil.rmtree(paths.etcd_data, ignore_errors=True)
    raise AssertionError("unreachable")


AUDIT_POLICY = """\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  - level: Metadata
"""


def _audit_policy(paths: ClusterPaths) -> Path:
    policy = paths.pki / "audit-policy.yaml"
    policy.write_text(AUDIT_POLICY)
    return policy


def _start_once(
    paths: ClusterPaths, binaries: Binaries, timeout: float, die_with_parent: bool
) -> RunningCluster:
    paths.root.mkdir(parents=True, exist_ok=True)
    paths.logs.mkdir(exist_ok=True)
    paths.volumes.mkdir(exist_ok=True)
    certs = write_certificates(paths.pki, node_name=NODE_NAME)
    etcd_port, etcd_peer_port, api_port = free_port(), free_port(), free_port()
    kubelet_port = free_port()
    server = f"https://127.0.0.1:{api_port}"
    paths.server_file.write_text(server + "\n")
    paths.kubeconfig.write_text(_kubeconfig(server, certs))
    paths.kubeconfig.chmod(0o600)

    launcher = _Launcher(paths, die_with_parent=die_with_parent)
    cluster = RunningCluster(paths, server, binaries.kubernetes_version, launcher.processes)
    try:
        _start_components(launcher, binaries, certs, etcd_port, etcd_peer_port, api_port)
        with admin_client(server, paths.pki, timeout=5.0) as client:
            _wait(
                "kube-apiserver /readyz",
                lambda: _answers(client, "/readyz", lambda r: r.status_code == 200),
                launcher,
                timeout,
            )
            # The serviceaccount controller creating `default` proves kube-controller-manager
            # runs; pods cannot be admitted into a namespace before its `default` exists.
            _wait(
                "kube-controller-manager (ServiceAccount default/default)",
                lambda: _answers(
                    client,
                    "/api/v1/namespaces/default/serviceaccounts/default",
                    lambda r: r.status_code == 200,
                ),
                launcher,
                timeout,
            )
            _grant_kubelet_api(client)
            launcher.start(
                "podrunner",
                [
                    sys.executable,
                    "-m",
                    "tests.harness.podrunner",
                    "--server",
                    server,
                    "--state-dir",
                    str(paths.root),
                    # Fixed, so that a restarted runner serves where its Node says.
                    f"--kubelet-port={kubelet_port}",
                ],
                env={**os.environ, "PYTHONPATH": str(REPO_ROOT), "PYTHONUNBUFFERED": "1"},
            )
            _wait(
                f"the pod runner's Node {NODE_NAME}",
                lambda: _answers(client, f"/api/v1/nodes/{NODE_NAME}", _node_is_ready),
                launcher,
                timeout,
            )
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _grant_kubelet_api(client: httpx.Client) -> None:
    """Let kube-apiserver's kubelet client identity use the kubelet API (logs), as kubeadm does:
    the pod runner's endpoint asks the apiserver (SubjectAccessReview) before serving."""
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": KUBELET_API_BINDING},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": "system:kubelet-api-admin",
        },
        "subjects": [
            {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": KUBELET_CLIENT_USER}
        ],
    }
    answer = client.post("/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", json=binding)
    if answer.status_code not in (201, 409):
        raise ClusterStartFailed(
            f"creating ClusterRoleBinding {KUBELET_API_BINDING}: HTTP {answer.status_code} "
            f"{answer.text[:300]}"
        )


def _node_is_ready(response: httpx.Response) -> bool:
    if response.status_code != 200:
        return False
    conditions = response.json().get("status", {}).get("conditions", [])
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def _start_components(
    launcher: _Launcher,
    binaries: Binaries,
    certs: ClusterCertificates,
    etcd_port: int,
    etcd_peer_port: int,
    api_port: int,
) -> None:
    paths = launcher.paths
    peer = f"http://127.0.0.1:{etcd_peer_port}"
    launcher.start(
        "etcd",
        [
            str(binaries.etcd),
            "--name=default",
            f"--data-dir={paths.etcd_data}",
            f"--listen-client-urls=http://127.0.0.1:{etcd_port}",
            f"--advertise-client-urls=http://127.0.0.1:{etcd_port}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=default={peer}",
            # Test data: durability is not worth an fsync per write.
            "--unsafe-no-fsync",
            "--log-level=warn",
        ],
    )
    launcher.start(
        "kube-apiserver",
        [
            str(binaries.kube_apiserver),
            f"--etcd-servers=http://127.0.0.1:{etcd_port}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={api_port}",
            f"--cert-dir={paths.pki}",
            f"--tls-cert-file={certs.serving_cert}",
            f"--tls-private-key-file={certs.serving_key}",
            f"--client-ca-file={certs.ca_cert}",
            f"--service-account-issuer=https://127.0.0.1:{api_port}",
            f"--service-account-key-file={certs.service_account_public_key}",
            f"--service-account-signing-key-file={certs.service_account_key}",
            "--service-cluster-ip-range=10.0.0.0/24",
            # pods/log and friends go to the pod runner's kubelet endpoint (Node InternalIP).
            f"--kubelet-client-certificate={certs.kubelet_client_cert}",
            f"--kubelet-client-key={certs.kubelet_client_key}",
            f"--kubelet-certificate-authority={certs.ca_cert}",
            "--kubelet-preferred-address-types=InternalIP",
            "--authorization-mode=RBAC",
            "--allow-privileged=true",
            # Who asked what (user, user agent, verb, resource): bench/scale.py counts the
            # operator's own requests from it; also handy when a test fails.
            f"--audit-policy-file={_audit_policy(paths)}",
            f"--audit-log-path={paths.audit_log}",
            "--audit-log-format=json",
            "--audit-log-maxsize=512",
            "--audit-log-maxbackup=1",
            # No kube-proxy/endpoints to maintain for the `kubernetes` Service on loopback.
            "--endpoint-reconciler-type=none",
            "--profiling=false",
        ],
    )
    kcm_kubeconfig = paths.root / "kube-controller-manager.kubeconfig"
    kcm_kubeconfig.write_text(paths.kubeconfig.read_text())
    kcm_kubeconfig.chmod(0o600)
    launcher.start(
        "kube-controller-manager",
        [
            str(binaries.kube_controller_manager),
            f"--kubeconfig={kcm_kubeconfig}",
            "--leader-elect=false",
            # All default controllers: job, garbage collector, namespace, serviceaccount(-token).
            "--controllers=*",
            f"--service-account-private-key-file={certs.service_account_key}",
            f"--root-ca-file={certs.ca_cert}",
            f"--cluster-signing-cert-file={certs.ca_cert}",
            f"--cluster-signing-key-file={certs.ca_key}",
            "--bind-address=127.0.0.1",
            # No HTTPS endpoint: nothing scrapes it, and a fixed default port would collide.
            "--secure-port=0",
            "--profiling=false",
        ],
    )


def _recorded(paths: ClusterPaths) -> dict[str, dict[str, int | None]]:
    if not paths.pids.exists():
        return {}
    recorded: dict[str, dict[str, int | None]] = json.loads(paths.pids.read_text())
    return recorded


def _is_alive(entry: dict[str, int | None]) -> bool:
    pid = entry.get("pid")
    return pid is not None and process_start_time(pid) == entry.get("start_time")


def recorded_components_alive(state_dir: Path) -> bool:
    """True when every component recorded in ``<state>/pids.json`` still runs."""
    recorded = _recorded(ClusterPaths(state_dir.resolve()))
    return set(recorded) == set(COMPONENTS) and all(map(_is_alive, recorded.values()))


def stop_recorded(state_dir: Path) -> list[str]:
    """Stop the processes recorded in ``<state>/pids.json`` and remove the state but logs/.

    A recorded pid is signalled only while its kernel start time still matches, so a pid
    reused by an unrelated process is left alone. Returns the names of the stopped components.
    """
    paths = ClusterPaths(state_dir.resolve())
    stopped: list[str] = []
    recorded = _recorded(paths)
    for name in reversed(COMPONENTS):
        entry = recorded.get(name)
        if not entry or not _is_alive(entry):
            continue
        pid = int(entry["pid"] or 0)
        _terminate(pid, partial(_is_gone, pid, entry.get("start_time")))
        stopped.append(name)
    if paths.root.exists():
        for child in paths.root.iterdir():
            if child.name in KEPT_ON_DOWN:
                continue
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child, ignore_errors=True)
            else:
                child.unlink(missing_ok=True)
    return stopped


def start_database(state_dir: Path) -> str:
    """The PostgreSQL harness server beside the control plane (``<state>/postgres/``, its
    credentials in ``server.json``), for database upgrades; a line saying where it is.

    Not fatal when PostgreSQL is not installed (``make sysdeps``): the rest still works."""
    from tests.harness import postgres

    try:
        server = postgres.start_postgres(state_dir)
    except postgres.PostgresStartFailed as error:
        return f"  postgres: not started ({error})"
    return (
        f"  postgres: {server.host}:{server.port} (roles postgres, {server.app_user}; "
        f"credentials in {state_dir}/postgres/server.json)"
    )


def stop_database(state_dir: Path) -> None:
    """Stop the state's PostgreSQL server first: ``stop_recorded`` removes its data."""
    from tests.harness import postgres

    postgres.stop_recorded(state_dir)


def main(argv: list[str] | None = None) -> int:
    """CLI: ``up`` or ``down`` (``make cluster`` / ``make cluster-down``)."""
    parser = argparse.ArgumentParser(prog="python -m tests.harness.cluster")
    parser.add_argument("action", choices=("up", "down"))
    parser.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR)
    args = parser.parse_args(argv)
    paths = ClusterPaths(args.state_dir.resolve())
    if args.action == "down":
        stop_database(paths.root)
        stopped = stop_recorded(paths.root)
        print(f"stopped: {', '.join(stopped) or 'nothing was running'}; removed {paths.root}")
        return 0
    if paths.pids.exists():
        if recorded_components_alive(paths.root):
            server = paths.server_file.read_text().strip()
            print(f"already running at {server}\n  export KUBECONFIG={paths.kubeconfig}")
            print(start_database(paths.root))
            return 0
        # Left over from a crash or a reboot: clear it (and any survivor) and start afresh.
        stop_database(paths.root)
        stop_recorded(paths.root)
    try:
        binaries = find_binaries()
    except ControlPlaneMissing as error:
        print(error, file=sys.stderr)
        return 1
    started = time.monotonic()
    try:
        cluster = start_cluster(paths.root, binaries=binaries)
    except ClusterStartFailed as error:
        print(f"cluster did not start: {error}", file=sys.stderr)
        stop_recorded(paths.root)
        return 1
    print(
        f"Kubernetes {cluster.kubernetes_version} at {cluster.server} "
        f"(ready in {time.monotonic() - started:.1f} s)\n"
        f"  export KUBECONFIG={paths.kubeconfig}\n"
        f"  PVC <ns>/<claim> = {paths.volumes}/<ns>/<claim>/\n"
        f"  logs: {paths.logs}/   stop: make cluster-down"
    )
    print(start_database(paths.root))
    return 0


if __name__ == "__main__":
    sys.exit(main())
