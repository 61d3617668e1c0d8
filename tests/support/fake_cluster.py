"""An in-memory `ClusterApi` for unit tests of the flow, with a small mover runner.

It keeps objects as the API server would hand them back (plain dicts, merge-patched status,
Secrets base64-encoded) and runs a created mover Job's command as a real local process — the
real `odoo-upgrade mover` against a real emulator — with the Job's mount paths mapped to
directories, then writes the Job's conditions and the pod's termination message as the
kubelet and the Job controller would. The one stand-in is the cluster itself; the flow, the
mover and the platform are the real ones.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import itertools
import json
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from odoo_upgrade.controller.kube import AlreadyExists, NotFound

REPO = Path(__file__).resolve().parents[2]
_uids = itertools.count(1)
Key = tuple[str, str]


def merge_patch(target: dict[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """RFC 7386 JSON merge patch (null deletes a key)."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(target.get(key), dict):
            merge_patch(target[key], value)
        else:
            target[key] = copy.deepcopy(dict(value) if isinstance(value, Mapping) else value)
    return target


def now() -> str:
    import datetime

    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class JobRun:
    """How the runner treats the next Job of a direction."""

    hold: bool = False  # leave it running (the test finishes it)
    log: str = ""  # what the running pod printed so far


@dataclass
class FakeCluster:
    """In-memory objects of one cluster; `volumes/<ns>/<claim>` are directories on disk."""

    root: Path
    upgrades: dict[Key, dict[str, Any]] = field(default_factory=dict)
    secrets: dict[Key, dict[str, Any]] = field(default_factory=dict)
    pvcs: dict[Key, dict[str, Any]] = field(default_factory=dict)
    jobs: dict[Key, dict[str, Any]] = field(default_factory=dict)
    pods: dict[Key, dict[str, Any]] = field(default_factory=dict)
    logs: dict[Key, str] = field(default_factory=dict)
    hold: set[str] = field(default_factory=set)  # Job names the runner leaves running
    calls: list[str] = field(default_factory=list)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    failing: dict[str, Exception] = field(default_factory=dict)  # method -> error, once

    # -- what a test sets up ---------------------------------------------------------------

    def add_upgrade(self, namespace: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        obj = {
            "apiVersion": "upgrade.odoo-operator.io/v1alpha1",
            "kind": "OdooUpgrade",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "uid": f"uid-{next(_uids)}",
                "generation": 1,
            },
            "spec": copy.deepcopy(spec),
        }
        self.upgrades[(namespace, name)] = obj
        return copy.deepcopy(obj)

    def edit_spec(self, namespace: str, name: str, changes: Mapping[str, Any]) -> None:
        obj = self.upgrades[(namespace, name)]
        merge_patch(obj["spec"], changes)
        obj["metadata"]["generation"] += 1

    def add_secret(self, namespace: str, name: str, values: Mapping[str, str]) -> None:
        self.secrets[(namespace, name)] = {
            "metadata": {"name": name, "namespace": namespace, "uid": f"uid-{next(_uids)}"},
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in values.items()},
        }

    def add_pvc(self, namespace: str, name: str) -> Path:
        self.pvcs[(namespace, name)] = {"metadata": {"name": name, "namespace": namespace}}
        return self.volume(namespace, name)

    def volume(self, namespace: str, claim: str) -> Path:
        path = self.root / "volumes" / namespace / claim
        path.mkdir(parents=True, exist_ok=True)
        return path

    def secret_values(self, namespace: str, name: str) -> dict[str, str]:
        data = self.secrets[(namespace, name)].get("data") or {}
        return {k: base64.b64decode(v).decode() for k, v in data.items()}

    def status(self, namespace: str, name: str) -> dict[str, Any]:
        return copy.deepcopy(self.upgrades[(namespace, name)].get("status") or {})

    def fail_once(self, method: str, error: Exception) -> None:
        """The next call of `method` raises `error` (an API server hiccup)."""
        self.failing[method] = error

    async def settle(self) -> None:
        """Wait for the movers the runner started."""
        while self.tasks:
            await self.tasks.pop()

    # -- ClusterApi ---------------------------------------------------------------------------

    def _call(self, method: str) -> None:
        self.calls.append(method)
        if method in self.failing:
            raise self.failing.pop(method)

    async def get_upgrade(self, namespace: str, name: str) -> dict[str, Any]:
        self._call("get_upgrade")
        if (namespace, name) not in self.upgrades:
            raise NotFound(name)
        return copy.deepcopy(self.upgrades[(namespace, name)])

    async def patch_upgrade_status(
        self, namespace: str, name: str, status: Mapping[str, Any]
    ) -> dict[str, Any]:
        self._call("patch_upgrade_status")
        if (namespace, name) not in self.upgrades:
            raise NotFound(name)
        obj = self.upgrades[(namespace, name)]
        obj["status"] = merge_patch(obj.get("status") or {}, status)
        # The API server stores JSON: what a test reads must survive a round trip.
        obj["status"] = json.loads(json.dumps(obj["status"]))
        return copy.deepcopy(obj)

    async def get_secret(self, namespace: str, name: str) -> dict[str, Any]:
        self._call("get_secret")
        if (namespace, name) not in self.secrets:
            raise NotFound(name)
        return copy.deepcopy(self.secrets[(namespace, name)])

    async def create_secret(self, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]:
        self._call("create_secret")
        name = body["metadata"]["name"]
        if (namespace, name) in self.secrets:
            raise AlreadyExists(name)
        data = dict(body.get("data") or {})
        for key, value in (body.get("stringData") or {}).items():
            data[key] = base64.b64encode(str(value).encode()).decode()
        secret = {"metadata": copy.deepcopy(dict(body["metadata"])), "data": data}
        secret["metadata"]["uid"] = f"uid-{next(_uids)}"
        self.secrets[(namespace, name)] = secret
        return copy.deepcopy(secret)

    async def patch_secret_data(
        self, namespace: str, name: str, values: Mapping[str, str]
    ) -> dict[str, Any]:
        self._call("patch_secret_data")
        if (namespace, name) not in self.secrets:
            raise NotFound(name)
        data = self.secrets[(namespace, name)].setdefault("data", {})
        for key, value in values.items():
            data[key] = base64.b64encode(value.encode()).decode()
        return copy.deepcopy(self.secrets[(namespace, name)])

    async def delete_secret(self, namespace: str, name: str) -> None:
        self._call("delete_secret")
        self.secrets.pop((namespace, name), None)

    async def get_pvc(self, namespace: str, name: str) -> dict[str, Any]:
        self._call("get_pvc")
        if (namespace, name) not in self.pvcs:
            raise NotFound(name)
        return copy.deepcopy(self.pvcs[(namespace, name)])

    async def get_job(self, namespace: str, name: str) -> dict[str, Any]:
        self._call("get_job")
        if (namespace, name) not in self.jobs:
            raise NotFound(name)
        return copy.deepcopy(self.jobs[(namespace, name)])

    async def list_jobs(self, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        self._call("list_jobs")
        wanted = dict(term.split("=", 1) for term in label_selector.split(","))
        return [
            copy.deepcopy(job)
            for (ns, _), job in self.jobs.items()
            if ns == namespace
            and all((job["metadata"].get("labels") or {}).get(k) == v for k, v in wanted.items())
        ]

    async def create_job(self, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]:
        self._call("create_job")
        name = body["metadata"]["name"]
        if (namespace, name) in self.jobs:
            raise AlreadyExists(name)
        job = copy.deepcopy(dict(body))
        job["metadata"]["uid"] = f"uid-{next(_uids)}"
        job["status"] = {}
        self.jobs[(namespace, name)] = job
        pod_name = f"{name}-{next(_uids)}"
        self.pods[(namespace, pod_name)] = {
            "metadata": {
                "name": pod_name,
                "namespace": namespace,
                "creationTimestamp": now(),
                "labels": {"batch.kubernetes.io/controller-uid": job["metadata"]["uid"]},
            },
            "status": {"phase": "Pending"},
        }
        if name not in self.hold:
            self.tasks.append(asyncio.create_task(self._run(namespace, name, pod_name)))
        return copy.deepcopy(job)

    async def delete_job(self, namespace: str, name: str) -> None:
        self._call("delete_job")
        job = self.jobs.pop((namespace, name), None)
        if job is None:
            return
        uid = job["metadata"]["uid"]
        for key, pod in list(self.pods.items()):
            if pod["metadata"]["labels"].get("batch.kubernetes.io/controller-uid") == uid:
                del self.pods[key]

    async def list_job_pods(self, namespace: str, job_uid: str) -> list[dict[str, Any]]:
        self._call("list_job_pods")
        return [
            copy.deepcopy(p)
            for (ns, _), p in self.pods.items()
            if ns == namespace
            and p["metadata"]["labels"].get("batch.kubernetes.io/controller-uid") == job_uid
        ]

    async def pod_log_tail(self, namespace: str, pod: str, lines: int = 5) -> str:
        self._call("pod_log_tail")
        return "\n".join(self.logs.get((namespace, pod), "").splitlines()[-lines:])

    # -- the Job controller and kubelet, in brief ------------------------------------------

    def pod_of(self, namespace: str, job_name: str) -> tuple[str, dict[str, Any]]:
        uid = self.jobs[(namespace, job_name)]["metadata"]["uid"]
        for (ns, name), pod in self.pods.items():
            if (
                ns == namespace
                and pod["metadata"]["labels"].get("batch.kubernetes.io/controller-uid") == uid
            ):
                return name, pod
        raise KeyError(job_name)

    def set_running(self, namespace: str, job_name: str, log: str = "") -> None:
        """The Job's pod is running and has printed `log`."""
        pod_name, pod = self.pod_of(namespace, job_name)
        pod["status"] = {"phase": "Running"}
        self.logs[(namespace, pod_name)] = log

    def set_pod_status(self, namespace: str, job_name: str, status: dict[str, Any]) -> None:
        _, pod = self.pod_of(namespace, job_name)
        pod["status"] = status

    def finish(self, namespace: str, job_name: str, *, exit_code: int, message: str | None) -> None:
        """End the Job's pod with `exit_code` and a termination message, as a kubelet would,
        and conclude the Job as its controller does (podFailurePolicy: exit 2 fails at once)."""
        _, pod = self.pod_of(namespace, job_name)
        terminated: dict[str, Any] = {"exitCode": exit_code}
        if message:
            terminated["message"] = message
        pod["status"] = {
            "phase": "Succeeded" if exit_code == 0 else "Failed",
            "containerStatuses": [{"name": "mover", "state": {"terminated": terminated}}],
        }
        kind = "Complete" if exit_code == 0 else "Failed"
        self.jobs[(namespace, job_name)]["status"] = {
            "conditions": [{"type": kind, "status": "True", "reason": "R", "message": ""}]
        }

    async def _run(self, namespace: str, job_name: str, pod_name: str) -> None:
        """Run the Job's container command as a local process, mount paths mapped."""
        job = self.jobs[(namespace, job_name)]
        pod_spec = job["spec"]["template"]["spec"]
        container = pod_spec["containers"][0]
        work = self.root / "pods" / pod_name
        work.mkdir(parents=True)
        mapping: dict[str, Path] = {}
        volumes = {v["name"]: v for v in pod_spec["volumes"]}
        for mount in container["volumeMounts"]:
            volume = volumes[mount["name"]]
            if "secret" in volume:
                directory = (
                    work / f"secret-{len(mapping)}"
                )  # one per mount (a pod may have several)
                directory.mkdir()
                key = (namespace, volume["secret"]["secretName"])
                for name, value in self.secret_values(*key).items() if key in self.secrets else ():
                    (directory / name).write_text(value)
                mapping[mount["mountPath"]] = directory
            elif "persistentVolumeClaim" in volume:
                claim = volume["persistentVolumeClaim"]["claimName"]
                mapping[mount["mountPath"]] = self.volume(namespace, claim)
            else:
                mapping[mount["mountPath"]] = work / mount["name"]
                mapping[mount["mountPath"]].mkdir()
        termination = work / "termination-log"
        mapping[container["terminationMessagePath"]] = termination

        def local(arg: str) -> str:
            for prefix in sorted(mapping, key=len, reverse=True):
                if arg == prefix or arg.startswith(prefix + "/"):
                    return str(mapping[prefix]) + arg[len(prefix) :]
            return arg

        command = [local(a) for a in container["command"][2:]]  # after `odoo-upgrade mover`
        env = {**os.environ, "PYTHONPATH": str(REPO / "operator")}
        self.pods[(namespace, pod_name)]["status"] = {"phase": "Running"}
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "odoo_upgrade.mover",
            *command,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=env,
        )
        output, _ = await process.communicate()
        self.logs[(namespace, pod_name)] = output.decode(errors="replace")
        if (namespace, job_name) not in self.jobs:
            return  # deleted meanwhile
        message = termination.read_text() if termination.exists() else None
        self.finish(namespace, job_name, exit_code=process.returncode or 0, message=message)
