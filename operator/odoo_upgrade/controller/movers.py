"""The mover contract, once for every direction (upload, download, dump, restore).

A mover Job has a deterministic name (`<name>-<direction>`), an ownerReference to its
`OdooUpgrade` and the resource's uid in its labels; a restarted operator adopts the Job it
created before instead of starting a second one. Its outcome comes from the Job's conditions,
its result from the pod's termination message, its progress from the pod's log.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from odoo_upgrade.controller.jobs import (
    UID_LABEL,
    JobOutcome,
    Owner,
    job_outcome,
    mover_job_name,
    mover_job_spec,
    pod_problem,
    termination_result,
)
from odoo_upgrade.controller.kube import AlreadyExists, ClusterApi, NotFound
from odoo_upgrade.controller.outcomes import Waiting
from odoo_upgrade.controller.secret_store import owned_by
from odoo_upgrade.controller.spec import UpgradeSpec
from odoo_upgrade.request.mover_result import NO_RESULT_YET, Direction, MoverResult
from odoo_upgrade.request.progress import ProgressLine, parse_progress_line
from odoo_upgrade.request.transport import Transport


class JobConflict(Exception):
    """A Job of the mover's name exists but belongs to another object."""


@dataclass(frozen=True)
class MoverJob:
    """A mover Job as last read, with its pods."""

    direction: Direction
    job: Mapping[str, Any]
    pods: list[dict[str, Any]] = field(default_factory=list)

    @property
    def outcome(self) -> JobOutcome:
        return job_outcome(self.job)

    @property
    def result(self) -> MoverResult:
        """The mover's own result; `NoResult` when none of its pods wrote one."""
        return termination_result(self.pods) or NO_RESULT_YET

    @property
    def problem(self) -> str | None:
        """Why its pod does not get on (Unschedulable, ImagePullBackOff, OOMKilled...)."""
        return pod_problem(self.pods)

    def running_pod(self) -> str | None:
        running = [p for p in self.pods if (p.get("status") or {}).get("phase") == "Running"]
        return str(running[-1]["metadata"]["name"]) if running else None


class MoverJobs:
    """Finds, starts and deletes one resource's mover Jobs."""

    def __init__(self, kube: ClusterApi, owner: Owner) -> None:
        self.kube = kube
        self.owner = owner

    def name(self, direction: Direction) -> str:
        return mover_job_name(self.owner.name, direction)

    async def find(self, direction: Direction) -> MoverJob | None:
        """The Job if it exists and is ours, with its pods.

        A Job being deleted is waited out (the next one is created once it is gone).
        """
        name = self.name(direction)
        try:
            job = await self.kube.get_job(self.owner.namespace, name)
        except NotFound:
            return None
        if not owned_by(job, self.owner.uid):
            raise JobConflict(f'Job "{name}" exists but belongs to another object')
        if (job.get("metadata") or {}).get("deletionTimestamp"):
            raise Waiting(f'Job "{name}" is being deleted', delay=2.0)
        uid = str((job.get("metadata") or {}).get("uid") or "")
        pods = await self.kube.list_job_pods(self.owner.namespace, uid) if uid else []
        return MoverJob(direction, job, pods)

    async def start(
        self, spec: UpgradeSpec, direction: Direction, *, transport: Transport | None = None
    ) -> bool:
        """Create the Job; False when it exists already (created by an earlier pass)."""
        try:
            await self.kube.create_job(
                self.owner.namespace,
                mover_job_spec(self.owner, spec, direction, transport=transport),
            )
        except AlreadyExists:
            return False
        return True

    async def progress(self, mover: MoverJob) -> ProgressLine | None:
        """The last progress line of the running pod's log (the mover has no API access)."""
        pod = mover.running_pod()
        if pod is None:
            return None
        return parse_progress_line(await self.kube.pod_log_tail(self.owner.namespace, pod))

    async def delete_all(self) -> None:
        """Delete every mover Job of this resource (one list by its uid label, not a read
        per direction); a Job carrying the label but owned by another object is left."""
        for job in await self.kube.list_jobs(self.owner.namespace, f"{UID_LABEL}={self.owner.uid}"):
            if owned_by(job, self.owner.uid):
                await self.kube.delete_job(self.owner.namespace, job["metadata"]["name"])

    async def delete(self, direction: Direction, *, only_ours: bool = True) -> None:
        name = self.name(direction)
        if only_ours:
            try:
                if not owned_by(
                    await self.kube.get_job(self.owner.namespace, name), self.owner.uid
                ):
                    return
            except NotFound:
                return
        await self.kube.delete_job(self.owner.namespace, name)
