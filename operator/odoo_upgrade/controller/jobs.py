"""Mover Job manifests (pure functions: spec in, dict out) and reading a Job's outcome.

Names are deterministic (`<name>-upload`, `<name>-download`, `<name>-check`, `<name>-dump`,
`<name>-restore`) so that a restarted operator finds the Job it created before instead of
starting a second transfer. Pods run non-root with a read-only root filesystem, no capabilities
and no service-account token: a mover only needs the request Secret (or a database connection
Secret, mounted as a volume) and its volumes.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from odoo_upgrade.controller import settings
from odoo_upgrade.controller.spec import GROUP, KIND, VERSION, UpgradeSpec
from odoo_upgrade.request.allowlist import plain_http_hosts
from odoo_upgrade.request.mover_result import EXIT_PERMANENT, Direction, MoverResult
from odoo_upgrade.request.platform import PlatformApi
from odoo_upgrade.request.transport import Transport

DEFAULT_MOVER_IMAGE = "ghcr.io/odoo-upgrade-operator/odoo-upgrade-operator:0.1.0"
MOVER_IMAGE_ENV = "ODOO_UPGRADE_MOVER_IMAGE"

REQUEST_DIR = "/var/run/odoo-upgrade/request"
SOURCE_MOUNT = "/data/source"
DESTINATION_MOUNT = "/data/destination"
TERMINATION_LOG = "/dev/termination-log"
# Database Jobs: the connection Secrets as volumes (the password never in args or env), the
# filestore PVC, and TMPDIR on a memory-backed emptyDir (libpq's password file lives there).
SOURCE_DATABASE_DIR = "/var/run/odoo-upgrade/source-database"
RESTORE_DATABASE_DIR = "/var/run/odoo-upgrade/restore-database"
FILESTORE_MOUNT = "/data/filestore"
PRIVATE_TMP = "/var/run/odoo-upgrade/tmp"
CONTAINER_NAME = "mover"
MOVER_UID = 65532

MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "odoo-upgrade-operator"
COMPONENT_LABEL = "app.kubernetes.io/component"
UID_LABEL = f"{GROUP}/upgrade-uid"
NAME_LABEL = f"{GROUP}/upgrade-name"

BACKOFF_LIMIT = 3
MAX_NAME = 63  # Job names end up in pod label values


@dataclass(frozen=True)
class Owner:
    """The `OdooUpgrade` a Job or Secret belongs to."""

    name: str
    namespace: str
    uid: str

    def reference(self) -> dict[str, Any]:
        """An ownerReference making the object garbage-collected with the resource."""
        return {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": KIND,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }


def mover_image() -> str:
    """The mover image: the operator's own image unless configured otherwise."""
    return os.environ.get(MOVER_IMAGE_ENV) or DEFAULT_MOVER_IMAGE


def child_name(owner_name: str, suffix: str) -> str:
    """`<owner>-<suffix>`, shortened with a stable hash when longer than a label value allows."""
    name = f"{owner_name}-{suffix}"
    if len(name) <= MAX_NAME:
        return name
    digest = hashlib.sha256(owner_name.encode()).hexdigest()[:8]
    keep = MAX_NAME - len(suffix) - len(digest) - 2
    return f"{owner_name[:keep].rstrip('-.')}-{digest}-{suffix}"


def mover_job_name(owner_name: str, direction: Direction) -> str:
    """`<name>-upload`, `<name>-download`, `<name>-dump`, `<name>-restore`."""
    return child_name(owner_name, direction.value)


def upload_job_name(owner_name: str) -> str:
    return mover_job_name(owner_name, Direction.UPLOAD)


def download_job_name(owner_name: str) -> str:
    return mover_job_name(owner_name, Direction.DOWNLOAD)


def request_secret_name(owner_name: str) -> str:
    return child_name(owner_name, "request")


def labels(owner: Owner, component: str = "mover") -> dict[str, str]:
    """Labels on the Job and its pods (docs/INTERNALS.md)."""
    return {
        MANAGED_BY_LABEL: MANAGED_BY,
        COMPONENT_LABEL: component,
        UID_LABEL: owner.uid,
        NAME_LABEL: owner.name[:63],
    }


def _pod_security_context() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": MOVER_UID,
        "runAsGroup": MOVER_UID,
        "fsGroup": MOVER_UID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _container_security_context() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _secret_volume(name: str, secret_name: str) -> dict[str, Any]:
    return {
        "name": name,
        "secret": {
            "secretName": secret_name,
            # Group-readable: the kubelet gives the files to fsGroup, the mover runs in it.
            "defaultMode": 0o440,
        },
    }


def _job(
    owner: Owner,
    name: str,
    args: list[str],
    volumes: list[dict[str, Any]],
    mounts: list[dict[str, Any]],
    image: str | None = None,
    *,
    request_secret: bool = True,
    env: Sequence[dict[str, Any]] = (),
) -> dict[str, Any]:
    job_labels = labels(owner)
    own_volumes: list[dict[str, Any]] = [{"name": "tmp", "emptyDir": {}}]
    own_mounts: list[dict[str, Any]] = [{"name": "tmp", "mountPath": "/tmp"}]
    if request_secret:
        own_volumes.insert(0, _secret_volume("request", request_secret_name(owner.name)))
        own_mounts.insert(0, {"name": "request", "mountPath": REQUEST_DIR, "readOnly": True})
    container = {
        "name": CONTAINER_NAME,
        "image": image or mover_image(),
        "imagePullPolicy": "IfNotPresent",
        "command": ["odoo-upgrade", "mover", *args],
        "env": [
            {"name": "HOME", "value": "/tmp"},
            {"name": "PYTHONUNBUFFERED", "value": "1"},
            *env,
        ],
        "securityContext": _container_security_context(),
        "resources": settings.current().mover_resources.to_json(),
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": [*own_mounts, *mounts],
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": owner.namespace,
            "labels": job_labels,
            "ownerReferences": [owner.reference()],
        },
        "spec": {
            **_deadline(),
            "backoffLimit": BACKOFF_LIMIT,
            "podFailurePolicy": {
                "rules": [
                    {
                        "action": "FailJob",
                        "onExitCodes": {
                            "containerName": CONTAINER_NAME,
                            "operator": "In",
                            "values": [EXIT_PERMANENT],
                        },
                    },
                    {
                        "action": "Ignore",
                        "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}],
                    },
                ]
            },
            "template": {
                "metadata": {"labels": job_labels},
                "spec": {
                    "restartPolicy": "Never",
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "securityContext": _pod_security_context(),
                    "containers": [container],
                    "volumes": [*own_volumes, *volumes],
                },
            },
        },
    }


def _deadline() -> dict[str, Any]:
    """A mover that hangs (a stalled peer, a stuck volume) is stopped by the Job controller."""
    seconds = settings.current().mover_active_deadline_seconds
    return {"activeDeadlineSeconds": seconds} if seconds else {}


def mover_job_spec(
    owner: Owner, spec: UpgradeSpec, direction: Direction, *, transport: Transport | None = None
) -> dict[str, Any]:
    """The Job of one mover direction (one contract for all: docs/INTERNALS.md); `transport`:
    how the download goes, where the flow chose it (`request.transport.download_transport`)."""
    if direction is Direction.DOWNLOAD and transport is not None:
        return download_job_spec(owner, spec, transport)
    builders = {
        Direction.UPLOAD: upload_job_spec,
        Direction.DOWNLOAD: download_job_spec,
        Direction.CHECK: check_job_spec,
        Direction.DUMP: dump_job_spec,
        Direction.RESTORE: restore_job_spec,
    }
    if direction not in builders:
        raise ValueError(f"no mover Job for direction {direction}")
    return builders[direction](owner, spec)


def api_args(spec: UpgradeSpec) -> list[str]:
    """For upgrade-request: `--api` and the hosts the operator allows in plain http (its
    allowlisted emulators: the request's assigned host may be one of them). Nothing for
    database-v1, the mover's default."""
    if spec.platform_api != PlatformApi.UPGRADE_REQUEST:
        return []
    args = ["--api", spec.platform_api]
    own = plain_http_hosts([spec.platform_url])  # the mover allows that one by itself
    for host in sorted(plain_http_hosts(settings.current().allowed_platform_urls) - own):
        args += ["--plain-http-host", host]
    return args


# ssh and rsync write their temporary files (key, known_hosts) on the emptyDir, not the
# read-only root filesystem.
TRANSFER_ENV = ({"name": "TMPDIR", "value": "/tmp"},)


def mover_transport(spec: UpgradeSpec) -> str:
    """The transport the mover is told: `auto` means rsync on upgrade-request."""
    if spec.platform_api == PlatformApi.UPGRADE_REQUEST:
        return Transport.RSYNC.value
    return spec.transport


def upload_job_spec(owner: Owner, spec: UpgradeSpec) -> dict[str, Any]:
    """The upload Job: source PVC read-only, request Secret, `odoo-upgrade mover upload`."""
    args = [
        "upload",
        "--platform-url",
        spec.platform_url,
        "--request-dir",
        REQUEST_DIR,
        "--source",
        posixpath.join(SOURCE_MOUNT, spec.source.path),
        "--transport",
        mover_transport(spec),
        "--sftp-threshold-bytes",
        str(spec.sftp_threshold_bytes),
        *api_args(spec),
        "--termination-log",
        TERMINATION_LOG,
    ]
    volume = {
        "name": "source",
        "persistentVolumeClaim": {"claimName": spec.source.claim_name, "readOnly": True},
    }
    mount = {"name": "source", "mountPath": SOURCE_MOUNT, "readOnly": True}
    return _job(owner, upload_job_name(owner.name), args, [volume], [mount], env=TRANSFER_ENV)


def download_job_spec(
    owner: Owner, spec: UpgradeSpec, transport: Transport = Transport.HTTPS
) -> dict[str, Any]:
    """The download Job: destination PVC read-write, request Secret, `mover download`
    (`--transport sftp` when the archive comes back over SFTP; HTTPS is the mover's default)."""
    over_sftp = transport is Transport.SFTP and spec.platform_api == PlatformApi.DATABASE_V1
    args = [
        "download",
        "--platform-url",
        spec.platform_url,
        "--request-dir",
        REQUEST_DIR,
        "--destination",
        posixpath.join(DESTINATION_MOUNT, spec.destination.path),
        "--format",
        spec.destination_format,
        *(["--transport", Transport.SFTP.value] if over_sftp else []),
        *api_args(spec),
        "--termination-log",
        TERMINATION_LOG,
    ]
    volume = {
        "name": "destination",
        "persistentVolumeClaim": {"claimName": spec.destination.claim_name},
    }
    mount = {"name": "destination", "mountPath": DESTINATION_MOUNT}
    return _job(owner, download_job_name(owner.name), args, [volume], [mount], env=TRANSFER_ENV)


def database_image() -> str:
    """The image of check, dump and restore Jobs (`--database-image`), else the mover image."""
    return settings.current().database_image or mover_image()


class DatabaseJobParts:
    """Volumes and mounts of a database Job: one volume per claim or Secret, mounted where
    needed (a claim read-only wherever it is only read)."""

    def __init__(self) -> None:
        self.volumes: list[dict[str, Any]] = [
            # Memory-backed: libpq's password file never reaches a disk.
            {"name": "private-tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}}
        ]
        self.mounts: list[dict[str, Any]] = [{"name": "private-tmp", "mountPath": PRIVATE_TMP}]
        self._claims: dict[str, dict[str, Any]] = {}
        self._secrets: dict[str, str] = {}

    def claim(self, claim_name: str, mount_path: str, *, read_only: bool) -> None:
        volume = self._claims.get(claim_name)
        if volume is None:
            volume = {
                "name": f"claim-{len(self._claims)}",
                "persistentVolumeClaim": {"claimName": claim_name, "readOnly": read_only},
            }
            self._claims[claim_name] = volume
            self.volumes.append(volume)
        elif not read_only:  # another mount of this claim writes: the volume may not be ro
            volume["persistentVolumeClaim"]["readOnly"] = False
        mount: dict[str, Any] = {"name": volume["name"], "mountPath": mount_path}
        if read_only:
            mount["readOnly"] = True
        self.mounts.append(mount)

    def secret(self, secret_name: str, mount_path: str) -> None:
        name = self._secrets.get(secret_name)
        if name is None:
            name = f"connection-{len(self._secrets)}"
            self._secrets[secret_name] = name
            self.volumes.append(_secret_volume(name, secret_name))
        self.mounts.append({"name": name, "mountPath": mount_path, "readOnly": True})

    def job(self, owner: Owner, direction: Direction, args: list[str]) -> dict[str, Any]:
        return _job(
            owner,
            mover_job_name(owner.name, direction),
            [direction.value, *args, "--termination-log", TERMINATION_LOG],
            self.volumes,
            self.mounts,
            database_image(),
            request_secret=False,
            env=[{"name": "TMPDIR", "value": PRIVATE_TMP}],
        )


def _filestore_args(parts: DatabaseJobParts, spec: UpgradeSpec, *, read_only: bool) -> list[str]:
    filestore = spec.restore.filestore if spec.restore else None
    if filestore is None:
        return []
    parts.claim(filestore.claim_name, FILESTORE_MOUNT, read_only=read_only)
    return [
        "--filestore-source",
        posixpath.join(FILESTORE_MOUNT, filestore.source_path),
        "--filestore-path",
        posixpath.join(FILESTORE_MOUNT, filestore.path),
    ]


def check_job_spec(owner: Owner, spec: UpgradeSpec) -> dict[str, Any]:
    """The pre-flight Job: connects, compares versions and looks at paths; changes nothing.

    Every volume read-only; `odoo-upgrade mover check`."""
    parts = DatabaseJobParts()
    args = ["--target", spec.target, "--token", owner.uid]
    if spec.source_database is not None:
        parts.secret(spec.source_database.secret_name, SOURCE_DATABASE_DIR)
        parts.claim(spec.source.claim_name, SOURCE_MOUNT, read_only=True)
        args += [
            "--source-secret-dir",
            SOURCE_DATABASE_DIR,
            "--source-database",
            spec.source_database.name,
            "--dump-destination",
            posixpath.join(SOURCE_MOUNT, spec.source.path),
        ]
    if spec.restore is not None:
        parts.secret(spec.restore.database.secret_name, RESTORE_DATABASE_DIR)
        args += [
            "--restore-secret-dir",
            RESTORE_DATABASE_DIR,
            "--restore-database",
            spec.restore.database.name,
            *_filestore_args(parts, spec, read_only=True),
        ]
    return parts.job(owner, Direction.CHECK, args)


def dump_job_spec(owner: Owner, spec: UpgradeSpec) -> dict[str, Any]:
    """The dump Job: `mover dump` of source.database to source.path (the source PVC written)."""
    if spec.source_database is None:
        raise ValueError("no dump Job without spec.source.database")
    parts = DatabaseJobParts()
    parts.secret(spec.source_database.secret_name, SOURCE_DATABASE_DIR)
    parts.claim(spec.source.claim_name, SOURCE_MOUNT, read_only=False)
    args = [
        "--secret-dir",
        SOURCE_DATABASE_DIR,
        "--database",
        spec.source_database.name,
        "--destination",
        posixpath.join(SOURCE_MOUNT, spec.source.path),
        "--token",
        owner.uid,
    ]
    return parts.job(owner, Direction.DUMP, args)


def restore_job_spec(owner: Owner, spec: UpgradeSpec) -> dict[str, Any]:
    """The restore Job: `mover restore` of the downloaded dump (destination PVC read-only)
    into restore.database, verified, and the filestore built (its PVC written)."""
    if spec.restore is None:
        raise ValueError("no restore Job without spec.restore")
    parts = DatabaseJobParts()
    parts.secret(spec.restore.database.secret_name, RESTORE_DATABASE_DIR)
    parts.claim(spec.destination.claim_name, DESTINATION_MOUNT, read_only=True)
    args = [
        "--secret-dir",
        RESTORE_DATABASE_DIR,
        "--database",
        spec.restore.database.name,
        "--dump",
        posixpath.join(DESTINATION_MOUNT, spec.destination.path),
        "--target",
        spec.target,
        "--token",
        owner.uid,
        *_filestore_args(parts, spec, read_only=False),
    ]
    return parts.job(owner, Direction.RESTORE, args)


@dataclass(frozen=True)
class JobOutcome:
    """How a mover Job ended, from its conditions; `None` fields while it runs."""

    finished: bool
    succeeded: bool
    reason: str = ""
    message: str = ""


RUNNING = JobOutcome(finished=False, succeeded=False)


def job_outcome(job: Mapping[str, Any]) -> JobOutcome:
    """The Job's outcome from `.status.conditions` (never the counters, which move on retries).

    `FailureTarget`/`SuccessCriteriaMet` come before `Failed`/`Complete` on recent clusters:
    the verdict is final already, only the pods' termination is still under way.
    """
    conditions: Sequence[Mapping[str, Any]] = (job.get("status") or {}).get("conditions") or []
    for condition in conditions:
        if condition.get("status") != "True":
            continue
        kind = condition.get("type")
        if kind in ("Complete", "SuccessCriteriaMet"):
            return JobOutcome(True, True, str(condition.get("reason") or ""), "")
        if kind in ("Failed", "FailureTarget"):
            return JobOutcome(
                True,
                False,
                str(condition.get("reason") or ""),
                str(condition.get("message") or ""),
            )
    return RUNNING


def termination_result(pods: Sequence[Mapping[str, Any]]) -> MoverResult | None:
    """The mover's result from the newest pod's termination message, if any.

    A message that is not JSON (FallbackToLogsOnError used the log tail) is a crash.
    """
    newest = sorted(pods, key=lambda p: str((p.get("metadata") or {}).get("creationTimestamp")))
    for pod in reversed(newest):
        for status in (pod.get("status") or {}).get("containerStatuses") or []:
            terminated = (status.get("state") or {}).get("terminated") or {}
            message = terminated.get("message")
            if message:
                return MoverResult.from_termination_message(str(message))
    return None


# Waiting reasons of a container that will not start by itself (kubelet names).
_STUCK_WAITING = frozenset(
    {
        "ErrImagePull",
        "ImagePullBackOff",
        "InvalidImageName",
        "CreateContainerConfigError",
        "CreateContainerError",
        "CrashLoopBackOff",
    }
)


def pod_problem(pods: Sequence[Mapping[str, Any]]) -> str | None:
    """Why the newest mover pod does not get on, as a kubelet or scheduler named it.

    `Unschedulable` (no node fits), an image or config the kubelet cannot start, or the last
    container `OOMKilled`: shown in the step's condition while the Job waits or retries.
    """
    newest = sorted(pods, key=lambda p: str((p.get("metadata") or {}).get("creationTimestamp")))
    for pod in reversed(newest):
        status = pod.get("status") or {}
        for condition in status.get("conditions") or []:
            if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
                detail = str(condition.get("message") or "").strip()
                return f"{condition.get('reason') or 'Unschedulable'}: {detail}".rstrip(": ")
        for container in status.get("containerStatuses") or []:
            state = container.get("state") or {}
            waiting = state.get("waiting") or {}
            if waiting.get("reason") in _STUCK_WAITING:
                detail = str(waiting.get("message") or "").strip()
                return f"{waiting['reason']}: {detail}".rstrip(": ")
            last = (container.get("lastState") or {}).get("terminated") or {}
            terminated = state.get("terminated") or last
            if terminated.get("reason") == "OOMKilled":
                return "OOMKilled: the mover exceeded its memory limit"
        return None
    return None
