"""Leader election on a `coordination.k8s.io/v1` Lease: only the holder runs kopf's handlers.

The election itself is kubernetes_asyncio's `leaderelection` (the Kubernetes client's port of
client-go's algorithm: a Lease updated with optimistic concurrency, taken over by a standby once
the holder has not renewed it for the lease duration). kopf's peering is not used: peers of equal
priority all pause, so it cannot hand work to exactly one replica.

Around the library, three guards make "only the leader acts" hold when things go wrong:

- every Lease call has a timeout and every failure counts as a failed attempt (the library
  waits on a hung call for ever, and lets connection errors escape its loop);
- a leader that reads the Lease and finds another holder exits at once;
- a watchdog thread exits the process when no renewal succeeded for the renew deadline, even if
  the event loop is stuck. The renew deadline is shorter than the lease duration, so the old
  leader has stopped before a standby can take the Lease over.

Exiting the process (as controller-runtime does) is the only stop that is surely immediate;
Kubernetes restarts the container, which then waits as a standby. A standby serves the liveness
endpoint itself until it leads, then hands the port to kopf.

Calls made here (the Role of deploy/default/leader_election_role.yaml):

    coordination.k8s.io  leases  get, update (the Lease `odoo-upgrade-operator`), create
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import threading
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException
from kubernetes_asyncio.leaderelection.electionconfig import Config
from kubernetes_asyncio.leaderelection.leaderelection import LeaderElection
from kubernetes_asyncio.leaderelection.leaderelectionrecord import LeaderElectionRecord
from kubernetes_asyncio.leaderelection.resourcelock.baselock import BaseLock

LEASE_NAME = "odoo-upgrade-operator"
SERVICE_ACCOUNT_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
EXIT_LEADERSHIP_LOST = 1

log = logging.getLogger("odoo_upgrade.leadership")


@dataclass(frozen=True)
class LeaseTimings:
    """Seconds; whole numbers, as the Lease stores its duration."""

    lease_duration: int = 15  # a standby takes over this long after the last renewal it saw
    renew_deadline: int = 10  # a leader that could not renew for this long stops
    retry_period: int = 2  # between two attempts to acquire or renew

    @property
    def call_timeout(self) -> float:
        """Timeout of one Lease call: two fit in the renew deadline."""
        return self.renew_deadline / 2


def own_namespace(
    env: Mapping[str, str] = os.environ,
    service_account_file: Path = SERVICE_ACCOUNT_NAMESPACE_FILE,
) -> str | None:
    """The operator's namespace: its ServiceAccount's, else `POD_NAMESPACE`; None outside a pod."""
    try:
        namespace = service_account_file.read_text().strip()
    except OSError:
        namespace = ""
    return namespace or env.get("POD_NAMESPACE", "").strip() or None


def own_identity(env: Mapping[str, str] = os.environ) -> str:
    """The holder identity written in the Lease: `POD_NAME`, else `<hostname>-<pid>`."""
    return env.get("POD_NAME", "").strip() or f"{socket.gethostname()}-{os.getpid()}"


def stop_acting(reason: str) -> NoReturn:
    """Exit the process now: no handler may run once another replica may lead."""
    log.critical("leadership lost (%s): exiting at once; only the new leader acts", reason)
    for handler in logging.getLogger().handlers:
        handler.flush()
    os._exit(EXIT_LEADERSHIP_LOST)


# -- the Lease, as the library reads and writes it ------------------------------------------------


def _local_naive(moment: datetime | None) -> str | None:
    # The library writes `str(datetime.fromtimestamp(...))` (local, naive): read back alike.
    return str(moment.astimezone().replace(tzinfo=None)) if moment else None


def _micro_time(record_time: str | None) -> str | None:
    """The library's local naive time string as the RFC 3339 MicroTime a Lease holds."""
    if not record_time:
        return None
    moment = datetime.fromisoformat(record_time).astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def lease_record(lease: Any) -> LeaderElectionRecord:
    """The election record a Lease holds."""
    spec = lease.spec
    if spec is None:
        return LeaderElectionRecord(None, None, None, None)
    return LeaderElectionRecord(
        spec.holder_identity or None,
        str(spec.lease_duration_seconds) if spec.lease_duration_seconds else None,
        _local_naive(spec.acquire_time),
        _local_naive(spec.renew_time),
    )


def _failed(status: int, reason: str) -> ApiException:
    # The library reads `json.loads(error.body)["code"]` of a failed read: give it one.
    error = ApiException(status=status, reason=reason)
    error.body = json.dumps({"code": status, "reason": reason}).encode()
    return error


class GuardedLeaseLock(BaseLock):
    """The Lease lock of kubernetes_asyncio's election, with timeouts and a holder check."""

    def __init__(
        self,
        name: str,
        namespace: str,
        identity: str,
        api_client: client.ApiClient,
        *,
        timeout: float,
        on_renewed: Callable[[], None],
        on_other_holder: Callable[[str], NoReturn],
    ) -> None:
        super().__init__(name, namespace, identity)
        self._api: Any = client.CoordinationV1Api(api_client)
        self._timeout = timeout
        self._on_renewed = on_renewed
        self._on_other_holder = on_other_holder
        self._lease: Any = None
        self.leading = False

    async def get(
        self, name: str, namespace: str
    ) -> tuple[bool, LeaderElectionRecord] | tuple[bool, Exception] | tuple[bool, None]:
        try:
            lease = await self._api.read_namespaced_lease(
                name, namespace, _request_timeout=self._timeout
            )
        except ApiException as error:
            if error.status != 404:
                log.warning("reading Lease %s/%s failed: %s %s", namespace, name, error.status,
                            error.reason)  # fmt: skip
            return False, _failed(int(error.status or 0), str(error.reason))
        except Exception as error:  # any failure to reach the API server is a failed attempt
            log.warning("reading Lease %s/%s failed: %r", namespace, name, error)
            return False, _failed(0, repr(error))
        self._lease = lease
        record = lease_record(lease)
        if self.leading and record.holder_identity != self.identity:
            self._on_other_holder(f"the Lease is held by {record.holder_identity or 'nobody'}")
        return True, record

    async def create(
        self, name: str, namespace: str, election_record: LeaderElectionRecord
    ) -> bool:
        body = client.V1Lease(
            metadata=client.V1ObjectMeta(name=name), spec=self._spec(election_record)
        )
        try:
            self._lease = await self._api.create_namespaced_lease(
                namespace, body, _request_timeout=self._timeout
            )
        except Exception as error:  # 409: another candidate created it first
            log.info("creating Lease %s/%s failed: %s", namespace, name, _short(error))
            return False
        self._on_renewed()
        return True

    async def update(self, name: str, namespace: str, updated_record: LeaderElectionRecord) -> bool:
        if self._lease is None:
            return False
        # Replace with the resourceVersion last read: a concurrent writer makes this a 409.
        self._lease.spec = self._spec(updated_record, self._lease.spec)
        try:
            self._lease = await self._api.replace_namespaced_lease(
                name, namespace, self._lease, _request_timeout=self._timeout
            )
        except Exception as error:
            log.warning("updating Lease %s/%s failed: %s", namespace, name, _short(error))
            return False
        self._on_renewed()
        return True

    async def release(self) -> None:
        """Give the Lease up (a clean stop): a standby takes it at its next attempt."""
        self.leading = False
        found, record = await self.get(self.name, self.namespace)
        if not found or not isinstance(record, LeaderElectionRecord):
            return
        if record.holder_identity != self.identity:
            return
        self._lease.spec.holder_identity = None
        self._lease.spec.lease_duration_seconds = 1
        try:
            await self._api.replace_namespaced_lease(
                self.name, self.namespace, self._lease, _request_timeout=self._timeout
            )
        except Exception as error:  # it expires by itself anyway
            log.warning("releasing Lease %s/%s failed: %s", self.namespace, self.name,
                        _short(error))  # fmt: skip
            return
        log.info("released Lease %s/%s", self.namespace, self.name)

    @staticmethod
    def _spec(record: LeaderElectionRecord, current: Any = None) -> Any:
        spec = current if current is not None else client.V1LeaseSpec()
        spec.holder_identity = record.holder_identity
        spec.lease_duration_seconds = int(float(record.lease_duration or 0))
        spec.acquire_time = _micro_time(record.acquire_time) or spec.acquire_time
        spec.renew_time = _micro_time(record.renew_time) or spec.renew_time
        return spec


def _short(error: Exception) -> str:
    if isinstance(error, ApiException):
        return f"{error.status} {error.reason}"
    return repr(error)


# -- the guards -----------------------------------------------------------------------------------


class RenewalWatchdog:
    """A thread that stops the process when the Lease was not renewed for `deadline` seconds."""

    def __init__(self, deadline: float, on_expired: Callable[[str], None]) -> None:
        self._deadline = deadline
        self._on_expired = on_expired
        self._last_renewal = time.monotonic()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="lease watchdog", daemon=True)

    def renewed(self) -> None:
        self._last_renewal = time.monotonic()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()

    def _watch(self) -> None:
        while not self._stopped.wait(0.2):
            silent = time.monotonic() - self._last_renewal
            if silent > self._deadline and not self._stopped.is_set():
                self._on_expired(f"the Lease was not renewed for {silent:.1f}s")
                return


class StandbyLiveness:
    """The liveness endpoint while kopf is not running yet (a standby is alive, and waits).

    A minimal HTTP/1.1 responder (any GET answers 200): a probe needs nothing more, and kopf
    takes the port over once leading.
    """

    BODY = b'{"leading": false}'

    def __init__(self, server: asyncio.Server) -> None:
        self._server = server

    @classmethod
    async def serve(cls, endpoint: str) -> StandbyLiveness:
        parts = urllib.parse.urlsplit(endpoint)
        # The same host and port kopf binds once leading (its defaults: localhost, 80).
        server = await asyncio.start_server(
            cls._answer, parts.hostname or "localhost", parts.port or 80, reuse_address=True
        )
        return cls(server)

    @classmethod
    async def _answer(cls, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            # The request line and headers; a probe sends no body.
            await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {len(cls.BODY)}\r\nConnection: close\r\n\r\n".encode()
                + cls.BODY
            )
            await writer.drain()
        except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    async def close(self) -> None:
        self._server.close()
        await self._server.wait_closed()


# -- running as the leader ------------------------------------------------------------------------


async def run_as_leader(
    run: Callable[[], Awaitable[None]],
    *,
    namespace: str,
    identity: str,
    liveness_endpoint: str | None = None,
    timings: LeaseTimings = LeaseTimings(),
    api_client: client.ApiClient | None = None,
) -> None:
    """Wait until this process holds the Lease, then `await run()` (kopf) while renewing it.

    Losing the Lease exits the process (`stop_acting`); when `run()` returns (a clean stop),
    the Lease is released so that a standby takes over without waiting for it to expire.
    """
    api = api_client or client.ApiClient()
    watchdog = RenewalWatchdog(timings.renew_deadline, stop_acting)
    lock = GuardedLeaseLock(
        LEASE_NAME,
        namespace,
        identity,
        api,
        timeout=timings.call_timeout,
        on_renewed=watchdog.renewed,
        on_other_holder=stop_acting,
    )
    acquired = asyncio.Event()

    async def started_leading() -> None:
        lock.leading = True
        watchdog.start()
        acquired.set()

    async def stopped_leading() -> None:
        stop_acting(f"the Lease could not be renewed within {timings.renew_deadline}s")

    election = LeaderElection(
        Config(
            lock,
            lease_duration=timings.lease_duration,
            renew_deadline=timings.renew_deadline,
            retry_period=timings.retry_period,
            onstarted_leading=started_leading,
            onstopped_leading=stopped_leading,
        )
    )
    standby = await StandbyLiveness.serve(liveness_endpoint) if liveness_endpoint else None
    log.info("standby: waiting for Lease %s/%s as %s", namespace, LEASE_NAME, identity)
    campaign = asyncio.create_task(election.run(), name="leader election")
    waiting = asyncio.create_task(acquired.wait())
    await asyncio.wait({campaign, waiting}, return_when=asyncio.FIRST_COMPLETED)
    if not acquired.is_set():
        waiting.cancel()
        await campaign  # it only ends early by raising: let that be the process's error
        raise RuntimeError("leader election ended without acquiring the Lease")
    stopping = False

    def campaign_ended(task: asyncio.Task[None]) -> None:
        if not stopping:
            stop_acting("the leader election loop ended" + _task_error(task))

    campaign.add_done_callback(campaign_ended)
    if standby is not None:
        await standby.close()
    log.info("leading: holding Lease %s/%s as %s", namespace, LEASE_NAME, identity)
    try:
        await run()
    finally:
        stopping = True
        watchdog.stop()
        campaign.cancel()
        await lock.release()
        await api.close()


def _task_error(task: asyncio.Task[None]) -> str:
    if task.cancelled():
        return " (cancelled)"
    error = task.exception()
    return f" ({error!r})" if error else ""
