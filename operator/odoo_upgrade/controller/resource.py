"""The `OdooUpgrade` being driven: where it lives, its latest state, how it reports.

Status is written through the status subresource only, conditions keep their transition times,
Events are redacted, platform calls are counted in the metrics.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from odoo_upgrade.controller import conditions as cond
from odoo_upgrade.controller import metrics
from odoo_upgrade.controller.jobs import Owner
from odoo_upgrade.controller.kube import KubeApi
from odoo_upgrade.controller.spec import UpgradeSpec
from odoo_upgrade.platform import Failure, PlatformError, PlatformFailure
from odoo_upgrade.platform.client import PlatformClient
from odoo_upgrade.redact import redact

T = TypeVar("T")


class EventSink(Protocol):
    """Posts a Kubernetes Event about the resource (messages are redacted by the sink)."""

    def __call__(self, type_: str, reason: str, message: str) -> None: ...


@dataclass
class Upgrade:
    """One `OdooUpgrade` being driven: where it lives, its latest state, how to report."""

    kube: KubeApi
    namespace: str
    name: str
    uid: str
    events: EventSink
    obj: dict[str, Any] = field(default_factory=dict)
    # In memory only to throttle best-effort progress probes; never a source of flow state.
    last_progress_probe: float = 0.0
    mover_retries: int = 0  # consecutive failed mover Jobs, for the backoff only

    @property
    def owner(self) -> Owner:
        return Owner(self.name, self.namespace, self.uid)

    @property
    def status(self) -> dict[str, Any]:
        return dict(self.obj.get("status") or {})

    @property
    def conditions(self) -> list[dict[str, Any]]:
        return list(self.status.get("conditions") or [])

    @property
    def generation(self) -> int | None:
        value = (self.obj.get("metadata") or {}).get("generation")
        return int(value) if value is not None else None

    @property
    def request_id(self) -> int | None:
        value = self.status.get("requestId")
        return int(value) if value is not None else None

    async def refresh(self) -> None:
        """Read the resource from the API server (the truth after any restart)."""
        self.obj = await self.kube.get_upgrade(self.namespace, self.name)
        metrics.record_phase(self.uid, self.status.get("phase"))

    async def patch_status(
        self,
        *,
        phase: str | None = None,
        conditions: list[tuple[str, str, str, str]] = (),  # type: ignore[assignment]
        **fields: Any,
    ) -> None:
        """Merge-patch `.status`: fields, conditions (type, status, reason, message), phase."""
        patch: dict[str, Any] = dict(fields)
        if conditions:
            current = self.conditions
            for type_, status, reason, message in conditions:
                current = cond.set_condition(
                    current, type_, status, reason, redact(message), generation=self.generation
                )
            patch["conditions"] = current
        if phase is not None:
            patch["phase"] = phase
        if self.generation is not None:
            patch["observedGeneration"] = self.generation
        self.obj = await self.kube.patch_upgrade_status(self.namespace, self.name, patch)
        metrics.record_phase(self.uid, self.status.get("phase"))

    def event(self, type_: str, reason: str, message: str) -> None:
        self.events(type_, reason, redact(message))

    async def platform_call(
        self, spec: UpgradeSpec, method: str, call: Callable[[PlatformClient], Awaitable[T]]
    ) -> T:
        """One platform call, counted in the metrics (errors by reason)."""
        metrics.PLATFORM_CALLS.labels(method=method).inc()
        try:
            async with PlatformClient(spec.platform_url) as platform:
                return await call(platform)
        except PlatformFailure as failure:
            for item in failure.failures or [Failure("UNKNOWN", "")]:
                metrics.PLATFORM_ERRORS.labels(method=method, reason=item.reason).inc()
            raise
        except PlatformError as error:
            metrics.PLATFORM_ERRORS.labels(method=method, reason=type(error).__name__).inc()
            raise


class Waiting(Exception):
    """Something the flow needs is not there yet; the condition says what. Retry later."""
