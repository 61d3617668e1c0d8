"""The handle e2e tests get from the ``cluster`` fixture (tests/e2e/conftest.py)."""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx

from tests.harness.cluster import REPO_ROOT, ClusterPaths
from tests.harness.kubeapi import admin_client
from tests.harness.kubectl import kubectl

T = TypeVar("T")


def wait_until(
    probe: Callable[[], T | None], *, timeout: float = 60.0, interval: float = 0.2, what: str
) -> T:
    """Poll ``probe`` until it returns something truthy; return it, or fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


@dataclass
class LocalCluster:
    """A running test control plane: kubeconfig, server URL, kubectl, volumes, logs."""

    state_dir: Path
    server: str
    kubernetes_version: str
    env: dict[str, str] = field(init=False)

    def __post_init__(self) -> None:
        venv_bin = str(REPO_ROOT / ".venv" / "bin")
        self.env = {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "PATH": f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}",
        }

    @property
    def paths(self) -> ClusterPaths:
        return ClusterPaths(self.state_dir)

    @property
    def kubeconfig(self) -> Path:
        """Admin kubeconfig (client certificate with ``O=system:masters``)."""
        return self.paths.kubeconfig

    @property
    def logs_dir(self) -> Path:
        """Component logs; pod output in ``pods/<ns>_<pod>.log``."""
        return self.paths.logs

    @property
    def pki_dir(self) -> Path:
        """ca.crt, admin.crt/key and the rest (see tests.harness.certs)."""
        return self.paths.pki

    def volume_dir(self, namespace: str, claim: str) -> Path:
        """The directory that is PVC ``<namespace>/<claim>`` for pods (created if missing)."""
        path = self.paths.volumes / namespace / claim
        path.mkdir(parents=True, exist_ok=True)
        return path

    def pod_log(self, namespace: str, pod: str) -> str:
        """What the pod's (first) container printed; empty if it has not run."""
        path = self.logs_dir / "pods" / f"{namespace}_{pod}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def kubectl(
        self,
        *args: str,
        input: str | None = None,
        check: bool = True,
        timeout: float = 60.0,
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl against this cluster (:func:`tests.harness.kubectl.kubectl`)."""
        return kubectl(*args, input=input, check=check, timeout=timeout, env=self.env)

    def get_json(self, *args: str) -> Any:
        """``kubectl get <args> -o json``, parsed."""
        return json.loads(self.kubectl("get", *args, "-o", "json").stdout)

    def apply(self, manifest: str, namespace: str | None = None) -> None:
        """``kubectl apply -f -`` of a YAML/JSON manifest."""
        extra = ["-n", namespace] if namespace else []
        self.kubectl("apply", *extra, "-f", "-", input=manifest)

    def admin_client(self) -> httpx.Client:
        """An httpx client for the apiserver authenticated as cluster admin (close it)."""
        return admin_client(self.server, self.pki_dir)

    def create_namespace(self, prefix: str = "e2e") -> str:
        """Create a fresh namespace and wait until pods can be admitted into it."""
        name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        self.kubectl("create", "namespace", name)
        # The ServiceAccount admission plugin refuses pods until `default` exists.
        wait_until(
            lambda: (
                self.kubectl("get", "-n", name, "serviceaccount", "default", check=False).returncode
                == 0
            ),
            timeout=30,
            what=f"ServiceAccount {name}/default",
        )
        return name
