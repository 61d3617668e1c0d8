"""The `OdooUpgrade` being driven: where it lives, its latest state, how it reports.

Status is written through the status subresource only, conditions keep their transition times,
Events are redacted, platform calls are counted in the metrics.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from odoo_upgrade.controller import conditions as cond
from odoo_upgrade.controller import metrics, settings
from odoo_upgrade.controller.jobs import Owner
from odoo_upgrade.controller.kube import ClusterApi
from odoo_upgrade.controller.movers import MoverJobs
from odoo_upgrade.controller.secret_store import RequestSecretStore
from odoo_upgrade.controller.spec import SpecError, UpgradeSpec, parse_duration
from odoo_upgrade.platform import PlatformError, PlatformFailure
from odoo_upgrade.platform.apis import open_platform
from odoo_upgrade.platform.pool import PlatformPool
from odoo_upgrade.redact import redact
from odoo_upgrade.request.allowlist import UrlNotAllowed, plain_http_hosts, url_is_allowed
from odoo_upgrade.request.platform import Platform
from odoo_upgrade.request.stored import StoredRequest

T = TypeVar("T")


class EventSink(Protocol):
    """Posts a Kubernetes Event about the resource (messages are redacted by the sink)."""

    def __call__(self, type_: str, reason: str, message: str) -> None: ...


@dataclass
class Upgrade:
    """One `OdooUpgrade` being driven: where it lives, its latest state, how to report."""

    kube: ClusterApi
    namespace: str
    name: str
    uid: str
    events: EventSink
    obj: dict[str, Any] = field(default_factory=dict)
    # Shared clients of a long-running operator; without, a client per call.
    platforms: PlatformPool | None = None
    # In memory only, to spare API requests; never a source of flow state: when progress was
    # last probed, how often the running mover Job was looked at, when the prerequisites
    # (PVCs, contract) were last found, when the next platform poll is due (monotonic; the
    # stored times have whole seconds and are written before a patch that may take seconds).
    last_progress_probe: float = 0.0
    job_looks: int = 0
    prerequisites_found_at: float = -1e9
    poll_due: float | None = None
    # The stored request as last read (it changes only through `write_secret`).
    _stored: StoredRequest | None = None
    # kopf's live view of the resource (kept current by its watch), if any, and the
    # resourceVersions this handle has read or written: a live view at one of those is not
    # newer than `obj`, so the next pass need not read the resource again.
    live: Mapping[str, Any] | None = None
    _versions_seen: set[str] = field(default_factory=set)

    @property
    def owner(self) -> Owner:
        return Owner(self.name, self.namespace, self.uid)

    @property
    def secrets(self) -> RequestSecretStore:
        return RequestSecretStore(self.kube, self.owner)

    @property
    def movers(self) -> MoverJobs:
        return MoverJobs(self.kube, self.owner)

    @property
    def status(self) -> dict[str, Any]:
        return dict(self.obj.get("status") or {})

    @property
    def phase(self) -> str | None:
        value = self.status.get("phase")
        return str(value) if value else None

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

    def waiting_interval(self) -> float:
        """How soon to look again while waiting for something outside (2 to 15 s)."""
        poll = ((self.obj.get("spec") or {}).get("platform") or {}).get("pollInterval")
        try:
            seconds = parse_duration(poll) if isinstance(poll, str) else 60.0
        except SpecError:
            seconds = 60.0
        return max(2.0, min(15.0, seconds))

    async def stored_request(self) -> StoredRequest | None:
        """The request Secret's view, read once and kept (the flow is its only writer)."""
        if self._stored is None:
            self._stored = await self.secrets.stored_request()
        return self._stored

    async def write_secret(self, values: dict[str, str]) -> None:
        """Merge values into the request Secret (creating it), then forget the cached view."""
        await self.secrets.write(values)
        self._stored = None

    async def refresh(self) -> None:
        """Read the resource from the API server (the truth after any restart), unless the
        live view shows nobody else changed it since this handle last read or wrote it."""
        if (
            self.obj
            and self.live is not None
            and self._version_of(self.live) in self._versions_seen
        ):
            return
        self.obj = await self.kube.get_upgrade(self.namespace, self.name)
        self._remember_version()
        metrics.record_phase(self.uid, self.phase)

    @staticmethod
    def _version_of(obj: Mapping[str, Any]) -> str:
        return str((obj.get("metadata") or {}).get("resourceVersion") or "")

    def _remember_version(self) -> None:
        version = self._version_of(self.obj)
        if version:
            if len(self._versions_seen) > 64:  # old versions never come back: keep it small
                self._versions_seen.clear()
            self._versions_seen.add(version)

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
        self._remember_version()
        metrics.record_phase(self.uid, self.phase)

    def event(self, type_: str, reason: str, message: str) -> None:
        self.events(type_, reason, redact(message))

    async def platform_call(
        self, spec: UpgradeSpec, method: str, call: Callable[[Platform], Awaitable[T]]
    ) -> T:
        """One platform call, counted in the metrics (errors by a closed set of reasons).

        Only to a URL the operator allows (`--allowed-platform-url`): `UrlNotAllowed` else."""
        allowed = settings.current().allowed_platform_urls
        if not url_is_allowed(spec.platform_url, allowed):
            raise UrlNotAllowed(spec.platform_url)
        metrics.PLATFORM_CALLS.labels(method=method).inc()
        plain = plain_http_hosts(allowed)  # an assigned host too may be an allowed emulator
        try:
            if self.platforms is not None:
                return await call(
                    self.platforms.get(spec.platform_api, spec.platform_url, plain_http_hosts=plain)
                )
            platform = open_platform(spec.platform_api, spec.platform_url, plain_http_hosts=plain)
            try:
                return await call(platform)
            finally:
                await platform.aclose()
        except PlatformFailure as failure:
            for item in failure.failures or []:
                metrics.count_platform_error(method, item.reason)
            raise
        except PlatformError as error:
            metrics.count_platform_error(method, type(error).__name__)
            raise
