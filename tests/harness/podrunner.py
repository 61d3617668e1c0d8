"""The pod runner: the one simulated component of the test cluster (the kubelet's part).

It registers the Node ``odoo-upgrade-podrunner`` (Ready, Lease renewed every 10 s), watches
pods labelled ``app.kubernetes.io/managed-by=odoo-upgrade-operator``, binds unscheduled ones to
its Node (there is no scheduler), runs each container as a local process (see
:mod:`tests.harness.container_process`) and writes the pod status back: Running, then Succeeded
or Failed with each container's exit code and termination message. Init containers run one after
the other first; containers then run side by side. A container that fails its pod fails; every
restartPolicy is treated as ``Never`` (OnFailure retries are left to the Job controller, which
then creates a new pod). A pod deleted while running has its processes stopped (SIGTERM, then
SIGKILL after the grace period, at most 30 s) and is then removed, as a kubelet would.

Process output (stdout and stderr together, through a pipe) goes to
``<state>/logs/pods/<ns>_<pod>.log`` (the first container) and ``<ns>_<pod>_<container>.log``
(any other, init containers included), with a timestamp per line beside it
(:mod:`tests.harness.podlogs`). The runner serves it as a kubelet does: HTTPS
``/containerLogs/<ns>/<pod>/<container>`` on 127.0.0.1 (:mod:`tests.harness.kubelet_server`),
registered on its Node (InternalIP 127.0.0.1, ``daemonEndpoints.kubeletEndpoint.Port``), so
``kubectl logs`` and the apiserver's ``pods/log`` reach it.

``python -m tests.harness.podrunner --server URL --state-dir DIR [--kubelet-port P]`` (started
by :func:`tests.harness.cluster.start_cluster`, which passes a fixed port so that a restarted
runner serves where the Node says).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import logging
import os
import shutil
import signal
import sys
from pathlib import Path
from typing import Any

from tests.harness.certs import ClusterCertificates
from tests.harness.container_process import (
    POD_IP,
    ContainerConfigError,
    ContainerStartError,
    LocalContainer,
    PodVolumes,
    PodWorkspace,
    local_container,
    read_only_strategy,
)
from tests.harness.kubeapi import ApiError, AsyncKubeApi
from tests.harness.kubelet_server import (
    ContainerNotFound,
    KubeletServer,
    NodeAuthorizer,
    serving_context,
)
from tests.harness.podlogs import ContainerLog, log_file_names

JsonObject = dict[str, Any]
NODE_NAME = "odoo-upgrade-podrunner"
POD_LABEL_SELECTOR = "app.kubernetes.io/managed-by=odoo-upgrade-operator"
LEASE_SECONDS = 40
MAX_TERMINATION_MESSAGE = 4096
FALLBACK_LOG_LINES = 80
FALLBACK_LOG_BYTES = 2048
MAX_GRACE_SECONDS = 30.0
CONFIG_RETRY_SECONDS = 2.0
# After a container exits, how long its output pipe may stay open (a child holding it).
OUTPUT_DRAIN_SECONDS = 2.0
REPO_ROOT = Path(__file__).resolve().parents[2]

log = logging.getLogger("podrunner")


def now() -> str:
    """An RFC 3339 timestamp (seconds) as Kubernetes writes them."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def micro_now() -> str:
    """A MicroTime timestamp (Leases)."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def pod_path(namespace: str, name: str) -> str:
    """API path of a pod."""
    return f"/api/v1/namespaces/{namespace}/pods/{name}"


class PodExecution:
    """One pod on this node: prepares, runs and reports its containers."""

    def __init__(self, runner: PodRunner, pod: JsonObject) -> None:
        self.runner = runner
        self.pod = pod
        self.namespace: str = pod["metadata"]["namespace"]
        self.name: str = pod["metadata"]["name"]
        self.uid: str = pod["metadata"]["uid"]
        self.processes: dict[str, asyncio.subprocess.Process] = {}
        self.deleting = False
        self.workspace = PodWorkspace(
            runner.state_dir / "pods" / f"{self.namespace}_{self.name}_{self.uid[:8]}"
        )
        self.logs = {
            container: ContainerLog.new_run(runner.logs_dir, file_name)
            for container, file_name in log_file_names(pod).items()
        }
        self.task: asyncio.Task[None] = asyncio.create_task(self.run())

    @property
    def path(self) -> str:
        return pod_path(self.namespace, self.name)

    async def _patch_status(self, status: JsonObject) -> None:
        try:
            await self.runner.api.strategic_patch(self.path + "/status", {"status": status})
        except ApiError as error:
            # Already gone (force-deleted): nobody is left to read the status.
            if error.status != 404:
                raise

    async def run(self) -> None:
        """Run the pod to completion and report; never raises except on cancellation."""
        try:
            await self._run()
        except Exception:
            log.exception("pod %s/%s: runner error", self.namespace, self.name)
            with contextlib.suppress(Exception):
                await self._patch_terminal(
                    "Failed", [], [], reason="PodRunnerError", message="see podrunner.log"
                )
        finally:
            # Containers that never ran end with the pod: their follows finish.
            for container_log in self.logs.values():
                container_log.end()
            _remove_tree(self.workspace.root)

    async def _run(self) -> None:
        spec = self.pod["spec"]
        init_specs = spec.get("initContainers") or []
        specs = spec["containers"]
        while True:
            # Each attempt starts from an empty workspace (Secrets may have changed meanwhile).
            _remove_tree(self.workspace.root)
            self.workspace.root.mkdir(parents=True)
            self.workspace.volumes.clear()
            volumes = PodVolumes(
                self.pod,
                self.workspace,
                self.runner.volumes_root,
                self.runner.fetch_object,
                self.runner.request_token,
                self.runner.read_only,
            )
            try:
                await volumes.prepare()
                init = [
                    await local_container(self.pod, c, volumes, self.runner.venv_bin)
                    for c in init_specs
                ]
                main = [
                    await local_container(self.pod, c, volumes, self.runner.venv_bin) for c in specs
                ]
                break
            except ContainerConfigError as error:
                # As a kubelet: stay Pending (waiting) and try again until it can start.
                await self._patch_waiting(specs, "CreateContainerConfigError", str(error))
                await asyncio.sleep(CONFIG_RETRY_SECONDS)
                if self.deleting:
                    return
            except ContainerStartError as error:
                await self._patch_terminal(
                    "Failed",
                    [],
                    [_start_error_status(c, str(error)) for c in specs],
                    reason="StartError",
                    message=str(error),
                )
                return

        started = now()
        await self._patch_status(
            {
                "phase": "Pending" if init else "Running",
                "hostIP": POD_IP,
                "hostIPs": [{"ip": POD_IP}],
                "podIP": POD_IP,
                "podIPs": [{"ip": POD_IP}],
                "startTime": started,
                "conditions": [
                    _condition("PodReadyToStartContainers", True),
                    _condition("Initialized", not init),
                ],
            },
        )
        init_statuses: list[JsonObject] = []
        for index, container in enumerate(init):
            status = await self._execute(container)
            init_statuses.append(status)
            if self.deleting or status["state"]["terminated"]["exitCode"] != 0:
                await self._patch_terminal("Failed", init_statuses, [], reason=None, message=None)
                return
            log.info("pod %s/%s: init container %d done", self.namespace, self.name, index)
        # Readable before the API says Running: `kubectl logs` right after sees no "waiting".
        for container in main:
            self.logs[container.name].start()
        await self._patch_running(main, initialized=bool(init))
        statuses = await asyncio.gather(*[self._execute(c) for c in main])
        failed = any(s["state"]["terminated"]["exitCode"] != 0 for s in statuses)
        await self._patch_terminal(
            "Failed" if failed else "Succeeded",
            init_statuses,
            list(statuses),
            reason=None,
            message=None,
        )

    async def _execute(self, container: LocalContainer) -> JsonObject:
        """Run one container process to its end; its terminated containerStatus."""
        output = self.logs[container.name]
        started = now()
        if self.deleting:
            output.end()
            return _start_error_status({"name": container.name}, "the pod was deleted")
        # A kubelet creates a missing workingDir too.
        with contextlib.suppress(OSError):
            container.cwd.mkdir(parents=True, exist_ok=True)
        output.start()
        output.open()
        try:
            process = await asyncio.create_subprocess_exec(
                *container.argv,
                cwd=container.cwd,
                env=container.env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                # Own process group: stopping the pod stops everything it started.
                start_new_session=True,
            )
        except OSError as error:
            output.end()
            return _start_error_status(
                {"name": container.name}, f"{container.argv[0]}: {error.strerror}"
            )
        assert process.stdout is not None
        pump = asyncio.create_task(output.pump(process.stdout))
        self.processes[container.name] = process
        try:
            # The command as the spec wrote it: expanded values may hold secrets.
            log.info(
                "pod %s/%s: container %s started (pid %d)",
                self.namespace,
                self.name,
                container.name,
                process.pid,
            )
            returncode = await process.wait()
            await _drain(pump, f"{self.namespace}/{self.name}/{container.name}")
        finally:
            self.processes.pop(container.name, None)
            pump.cancel()
            output.end()
        exit_code = returncode if returncode >= 0 else 128 - returncode
        message = _termination_message(container, output.path, exit_code)
        log.info(
            "pod %s/%s: container %s exited %d",
            self.namespace,
            self.name,
            container.name,
            exit_code,
        )
        terminated: JsonObject = {
            "exitCode": exit_code,
            "reason": "Completed" if exit_code == 0 else "Error",
            "startedAt": started,
            "finishedAt": now(),
            "containerID": f"podrunner://{process.pid}",
        }
        if message:
            terminated["message"] = message
        return {
            "name": container.name,
            "image": _image_of(self.pod, container.name),
            "imageID": "",
            "containerID": f"podrunner://{process.pid}",
            "ready": False,
            "started": False,
            "restartCount": 0,
            "state": {"waiting": None, "running": None, "terminated": terminated},
        }

    async def stop(self, grace: float) -> None:
        """Stop the pod's processes: SIGTERM to each group, SIGKILL after ``grace`` seconds."""
        self.deleting = True
        for process in list(self.processes.values()):
            _signal_group(process.pid, signal.SIGTERM)
        deadline = asyncio.get_running_loop().time() + min(grace, MAX_GRACE_SECONDS)
        while self.processes and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        for process in list(self.processes.values()):
            _signal_group(process.pid, signal.SIGKILL)

    async def _patch_waiting(self, specs: list[JsonObject], reason: str, message: str) -> None:
        await self._patch_status(
            {
                "containerStatuses": [
                    {
                        "name": c["name"],
                        "image": c.get("image", ""),
                        "imageID": "",
                        "ready": False,
                        "started": False,
                        "restartCount": 0,
                        "state": {"waiting": {"reason": reason, "message": message}},
                    }
                    for c in specs
                ]
            }
        )

    async def _patch_running(self, containers: list[LocalContainer], *, initialized: bool) -> None:
        started = now()
        await self._patch_status(
            {
                "phase": "Running",
                "conditions": [
                    _condition("Initialized", True),
                    _condition("ContainersReady", True),
                    _condition("Ready", True),
                ],
                "containerStatuses": [
                    {
                        "name": c.name,
                        "image": _image_of(self.pod, c.name),
                        "imageID": "",
                        "ready": True,
                        "started": True,
                        "restartCount": 0,
                        "state": {"waiting": None, "running": {"startedAt": started}},
                    }
                    for c in containers
                ],
            }
        )

    async def _patch_terminal(
        self,
        phase: str,
        init_statuses: list[JsonObject],
        statuses: list[JsonObject],
        *,
        reason: str | None,
        message: str | None,
    ) -> None:
        status: JsonObject = {
            "phase": phase,
            "conditions": [
                _condition("PodReadyToStartContainers", False),
                _condition("ContainersReady", False, "PodCompleted"),
                _condition("Ready", False, "PodCompleted"),
            ],
        }
        if init_statuses:
            status["initContainerStatuses"] = init_statuses
        if statuses:
            status["containerStatuses"] = statuses
        if reason:
            status["reason"] = reason
        if message:
            status["message"] = message
        await self._patch_status(status)
        log.info("pod %s/%s: %s", self.namespace, self.name, phase)


def _image_of(pod: JsonObject, container_name: str) -> str:
    spec = pod["spec"]
    for container in (spec.get("initContainers") or []) + spec["containers"]:
        if container["name"] == container_name:
            return str(container.get("image", ""))
    return ""


def _condition(kind: str, status: bool, reason: str | None = None) -> JsonObject:
    condition: JsonObject = {
        "type": kind,
        "status": "True" if status else "False",
        "lastProbeTime": None,
        "lastTransitionTime": now(),
    }
    if reason:
        condition["reason"] = reason
    return condition


def _start_error_status(container: JsonObject, message: str) -> JsonObject:
    # What a kubelet reports when the runtime cannot exec the command.
    return {
        "name": container["name"],
        "image": container.get("image", ""),
        "imageID": "",
        "ready": False,
        "started": False,
        "restartCount": 0,
        "state": {
            "waiting": None,
            "running": None,
            "terminated": {
                "exitCode": 128,
                "reason": "StartError",
                "message": message[:MAX_TERMINATION_MESSAGE],
                "startedAt": now(),
                "finishedAt": now(),
            },
        },
    }


def _termination_message(container: LocalContainer, log_path: Path, exit_code: int) -> str:
    """The termination message file (first 4096 bytes), or the log tail if the policy says so."""
    try:
        with container.termination_log.open("rb") as file:
            message = file.read(MAX_TERMINATION_MESSAGE)
    except OSError:
        message = b""
    if not message and exit_code != 0 and container.termination_policy == "FallbackToLogsOnError":
        lines = log_path.read_bytes().splitlines()[-FALLBACK_LOG_LINES:]
        message = b"\n".join(lines)[-FALLBACK_LOG_BYTES:]
    return message.decode(errors="replace")


async def _drain(pump: asyncio.Task[None], container: str) -> None:
    """Wait for the output pump to reach the pipe's end, a bounded while."""
    try:
        await asyncio.wait_for(pump, OUTPUT_DRAIN_SECONDS)
    except TimeoutError:
        log.warning("container %s: output still open after exit; not read further", container)
    except Exception as error:
        log.warning("container %s: output not kept: %r", container, error)


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def _remove_tree(path: Path) -> None:
    # Read-only copies and secret directories are mode 0555: a non-root runner restores write
    # permission before removing them.
    if not path.exists():
        return
    if os.geteuid() != 0:
        for directory, _dirs, _files in os.walk(path):
            with contextlib.suppress(OSError):
                os.chmod(directory, 0o700)
    shutil.rmtree(path, ignore_errors=True)


class PodRunner:
    """Watches labelled pods and runs the ones bound to its Node."""

    def __init__(
        self,
        api: AsyncKubeApi,
        state_dir: Path,
        *,
        node_name: str = NODE_NAME,
        selector: str = POD_LABEL_SELECTOR,
        venv_bin: Path | None = None,
        kubelet_port: int = 0,
    ) -> None:
        self.api = api
        self.state_dir = state_dir
        self.volumes_root = state_dir / "volumes"
        self.logs_dir = state_dir / "logs" / "pods"
        self.node_name = node_name
        self.selector = selector
        self.venv_bin = venv_bin or Path(sys.executable).parent
        self.executions: dict[str, PodExecution] = {}
        self.binding: set[str] = set()
        self.finalizing: set[str] = set()
        self.background: set[asyncio.Task[None]] = set()
        self.read_only = read_only_strategy()
        self.kubelet_port = kubelet_port

    async def run(self) -> None:
        """Serve the kubelet endpoint, register the Node, then run pods until cancelled."""
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        self.volumes_root.mkdir(parents=True, exist_ok=True)
        pki = ClusterCertificates.in_directory(self.state_dir / "pki")
        kubelet = KubeletServer(
            self,
            NodeAuthorizer(self.api, self.node_name),
            serving_context(pki.kubelet_serving_cert, pki.kubelet_serving_key, pki.ca_cert),
        )
        self.kubelet_port = await kubelet.start(self.kubelet_port)
        log.info("kubelet endpoint on https://127.0.0.1:%d", self.kubelet_port)
        try:
            await self.register_node()
            log.info("read-only mounts enforced by: %s", self.read_only)
            lease = asyncio.create_task(self.renew_lease())
            try:
                await self.watch_pods()
            finally:
                lease.cancel()
                await self.shutdown()
        finally:
            await kubelet.stop()

    async def shutdown(self) -> None:
        """Stop every running pod process (the runner is going away)."""
        executions = list(self.executions.values())
        await asyncio.gather(*(e.stop(2.0) for e in executions), return_exceptions=True)
        for execution in executions:
            execution.task.cancel()

    async def register_node(self) -> None:
        """Create (or keep) the Node and mark it Ready."""
        labels = {
            "kubernetes.io/hostname": self.node_name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            "node.kubernetes.io/instance-type": "podrunner",
        }
        try:
            await self.api.create(
                "/api/v1/nodes",
                {
                    "apiVersion": "v1",
                    "kind": "Node",
                    "metadata": {"name": self.node_name, "labels": labels},
                },
            )
        except ApiError as error:
            if error.status != 409:
                raise
        stamp = now()
        await self.api.strategic_patch(
            f"/api/v1/nodes/{self.node_name}/status",
            {
                "status": {
                    "conditions": [
                        {
                            "type": "Ready",
                            "status": "True",
                            "reason": "KubeletReady",
                            "message": "odoo-upgrade test pod runner is ready",
                            "lastHeartbeatTime": stamp,
                            "lastTransitionTime": stamp,
                        }
                    ],
                    "addresses": [
                        {"type": "InternalIP", "address": POD_IP},
                        {"type": "Hostname", "address": self.node_name},
                    ],
                    # Where kube-apiserver reaches this "kubelet" (pods/log).
                    "daemonEndpoints": {"kubeletEndpoint": {"Port": self.kubelet_port}},
                    "capacity": {"cpu": "8", "memory": "16Gi", "pods": "250"},
                    "allocatable": {"cpu": "8", "memory": "16Gi", "pods": "250"},
                    "nodeInfo": {
                        "kubeletVersion": "v0.0.0-podrunner",
                        "operatingSystem": "linux",
                        "architecture": "amd64",
                        "containerRuntimeVersion": "podrunner://local-processes",
                        "kernelVersion": os.uname().release,
                        "osImage": "local processes",
                        "kubeProxyVersion": "",
                        "machineID": "",
                        "systemUUID": "",
                        "bootID": "",
                    },
                }
            },
        )
        log.info("node %s registered and Ready", self.node_name)

    async def renew_lease(self) -> None:
        """Keep the node Lease fresh so the node lifecycle controller never taints the Node."""
        path = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases"
        while True:
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": self.node_name, "namespace": "kube-node-lease"},
                "spec": {
                    "holderIdentity": self.node_name,
                    "leaseDurationSeconds": LEASE_SECONDS,
                    "renewTime": micro_now(),
                },
            }
            try:
                try:
                    await self.api.strategic_patch(
                        f"{path}/{self.node_name}", {"spec": body["spec"]}
                    )
                except ApiError as error:
                    if error.status != 404:
                        raise
                    await self.api.create(path, body)
            except Exception as error:
                log.warning("lease renewal failed: %s", error)
            await asyncio.sleep(10)

    async def watch_pods(self) -> None:
        """List then watch labelled pods in every namespace; relist when the watch expires."""
        while True:
            try:
                listing = await self.api.get("/api/v1/pods", {"labelSelector": self.selector})
                for pod in listing.get("items", []):
                    self.observe(pod, initial=True)
                version = listing["metadata"]["resourceVersion"]
                while True:
                    async for event in self.api.watch(
                        "/api/v1/pods",
                        {
                            "labelSelector": self.selector,
                            "resourceVersion": version,
                            "timeoutSeconds": "300",
                        },
                    ):
                        kind = event["type"]
                        obj = event["object"]
                        if kind == "ERROR":
                            raise ApiError("WATCH", "/api/v1/pods", obj.get("code", 0), str(obj))
                        version = obj["metadata"]["resourceVersion"]
                        if kind == "DELETED":
                            self.forget(obj)
                        elif kind in ("ADDED", "MODIFIED"):
                            self.observe(obj)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                # 410 Gone and dropped connections alike: start again from a fresh list.
                log.info("pod watch restarts: %s", error)
                await asyncio.sleep(0.5)

    def observe(self, pod: JsonObject, *, initial: bool = False) -> None:
        """React to the current state of one pod."""
        metadata = pod["metadata"]
        uid = metadata["uid"]
        spec = pod["spec"]
        phase = pod.get("status", {}).get("phase", "Pending")
        execution = self.executions.get(uid)
        if metadata.get("deletionTimestamp"):
            if spec.get("nodeName") == self.node_name and uid not in self.finalizing:
                self.finalizing.add(uid)
                grace = float(metadata.get("deletionGracePeriodSeconds") or 0)
                self._spawn(self.finalize_deletion(pod, execution, grace))
            return
        if not spec.get("nodeName"):
            if uid not in self.binding:
                self.binding.add(uid)
                self._spawn(self.bind(pod))
            return
        if spec["nodeName"] != self.node_name or execution is not None:
            return
        if phase == "Pending":
            self.executions[uid] = PodExecution(self, pod)
        elif phase == "Running" and initial:
            # Running on this node but no process of ours: the runner restarted; it is lost.
            self._spawn(self.mark_lost(pod))

    def forget(self, pod: JsonObject) -> None:
        """The pod is gone: stop anything still running for it."""
        uid = pod["metadata"]["uid"]
        self.binding.discard(uid)
        self.finalizing.discard(uid)
        execution = self.executions.pop(uid, None)
        if execution is not None and not execution.task.done():
            self._spawn(execution.stop(0))

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.create_task(coroutine)
        self.background.add(task)
        task.add_done_callback(self._background_done)

    def _background_done(self, task: asyncio.Task[None]) -> None:
        self.background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("background step failed: %r", task.exception())

    async def bind(self, pod: JsonObject) -> None:
        """Bind an unscheduled pod to this node (there is no kube-scheduler)."""
        namespace, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
        try:
            await self.api.create(
                pod_path(namespace, name) + "/binding",
                {
                    "apiVersion": "v1",
                    "kind": "Binding",
                    "metadata": {"name": name, "namespace": namespace},
                    "target": {"apiVersion": "v1", "kind": "Node", "name": self.node_name},
                },
            )
            log.info("pod %s/%s bound to %s", namespace, name, self.node_name)
        except ApiError as error:
            # 409: already bound, 404: already deleted.
            if error.status not in (404, 409):
                log.warning("binding %s/%s failed: %s", namespace, name, error)
                self.binding.discard(pod["metadata"]["uid"])
        except Exception as error:
            # The apiserver stayed unreachable: the next event or relist tries again.
            log.warning("binding %s/%s failed: %r", namespace, name, error)
            self.binding.discard(pod["metadata"]["uid"])

    async def finalize_deletion(
        self, pod: JsonObject, execution: PodExecution | None, grace: float
    ) -> None:
        """Stop the pod's processes, then remove the pod for good (grace period 0)."""
        namespace, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
        if execution is not None and not execution.task.done():
            await execution.stop(grace)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(execution.task), 10)
        try:
            await self.api.delete(
                pod_path(namespace, name),
                {
                    "apiVersion": "v1",
                    "kind": "DeleteOptions",
                    "gracePeriodSeconds": 0,
                    "preconditions": {"uid": pod["metadata"]["uid"]},
                },
            )
        except ApiError as error:
            if error.status not in (404, 409):
                log.warning("deleting %s/%s failed: %s", namespace, name, error)

    async def mark_lost(self, pod: JsonObject) -> None:
        """Fail a pod whose process this runner no longer has."""
        namespace, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
        await self.api.strategic_patch(
            pod_path(namespace, name) + "/status",
            {
                "status": {
                    "phase": "Failed",
                    "reason": "PodRunnerRestarted",
                    "message": "the pod runner restarted while this pod ran",
                }
            },
        )

    async def container_log(self, namespace: str, pod: str, container: str) -> ContainerLog:
        """The log of a container of a pod bound to this Node (the kubelet endpoint's source).

        A pod this runner runs or ran has its live log; one from before a runner restart is
        looked up in the API and read from its file.
        """
        for execution in reversed(list(self.executions.values())):
            if execution.namespace == namespace and execution.name == pod:
                found = execution.logs.get(container)
                if found is None:
                    raise ContainerNotFound(f'container "{container}" not found in pod "{pod}"')
                return found
        try:
            obj = await self.api.get(pod_path(namespace, pod))
        except ApiError as error:
            if error.status == 404:
                raise ContainerNotFound(f'pod "{pod}" does not exist') from None
            raise
        if obj["spec"].get("nodeName") != self.node_name:
            raise ContainerNotFound(f'pod "{pod}" does not exist')
        file_name = log_file_names(obj).get(container)
        if file_name is None:
            raise ContainerNotFound(f'container "{container}" not found in pod "{pod}"')
        return ContainerLog.finished(self.logs_dir, file_name)

    async def fetch_object(self, kind: str, namespace: str, name: str) -> JsonObject | None:
        """GET a Secret or ConfigMap; None when it does not exist."""
        resource = {"Secret": "secrets", "ConfigMap": "configmaps"}[kind]
        try:
            return await self.api.get(f"/api/v1/namespaces/{namespace}/{resource}/{name}")
        except ApiError as error:
            if error.status == 404:
                return None
            raise

    async def request_token(
        self, namespace: str, service_account: str, audience: str | None, seconds: int
    ) -> str:
        """A bound service-account token from the TokenRequest API."""
        spec: JsonObject = {"expirationSeconds": max(seconds, 600)}
        if audience:
            spec["audiences"] = [audience]
        answer = await self.api.create(
            f"/api/v1/namespaces/{namespace}/serviceaccounts/{service_account}/token",
            {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec},
        )
        return str(answer["status"]["token"])


async def _serve(server: str, state_dir: Path, kubelet_port: int) -> None:
    api = AsyncKubeApi(server, state_dir / "pki")
    # The project's venv even when the runner itself was started by another interpreter.
    venv_bin = REPO_ROOT / ".venv" / "bin"
    runner = PodRunner(
        api,
        state_dir,
        venv_bin=venv_bin if venv_bin.is_dir() else None,
        kubelet_port=kubelet_port,
    )
    task = asyncio.create_task(runner.run())
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    try:
        await task
    except asyncio.CancelledError:
        pass
    finally:
        await api.close()


def main(argv: list[str] | None = None) -> int:
    """CLI entry point (see module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m tests.harness.podrunner")
    parser.add_argument("--server", required=True, help="apiserver URL (https://127.0.0.1:PORT)")
    parser.add_argument("--state-dir", type=Path, required=True, help="cluster state directory")
    parser.add_argument(
        "--kubelet-port", type=int, default=0, help="port of the kubelet endpoint (0: any free)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    # One line per request would drown the pod events.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    asyncio.run(_serve(args.server, args.state_dir.resolve(), args.kubelet_port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
