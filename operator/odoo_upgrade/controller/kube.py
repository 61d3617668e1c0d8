"""Every Kubernetes API call the operator makes, in one place (the RBAC derives from this list).

Calls made here (kubernetes_asyncio; kopf logs in with the same credentials, `load_credentials`):

    upgrade.odoo-operator.io  odooupgrades          get
    upgrade.odoo-operator.io  odooupgrades/status   patch
    ""                        secrets               get, create, patch, delete
    ""                        persistentvolumeclaims get
    batch                     jobs                  get, create, delete
    ""                        pods                  list
    ""                        pods/log              get        (mover progress, best effort)

Calls made by kopf on the operator's behalf:

    upgrade.odoo-operator.io  odooupgrades          list, watch, patch (finalizer, annotations)
    batch                     jobs                  list, watch (mover Jobs wake their flow)
    apiextensions.k8s.io      customresourcedefinitions  list, watch (resource discovery)
    ""                        namespaces            list, watch (only with namespace patterns)
    ""  and events.k8s.io     events                create (kopf.event)
    coordination.k8s.io       leases                get, create, update (--leader-elect, made
                                                    by controller/leadership.py; kopf runs
                                                    --standalone: no peering resources)
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException

from odoo_upgrade import __version__
from odoo_upgrade.controller.spec import GROUP, PLURAL, VERSION

MERGE_PATCH = "application/merge-patch+json"
TIMEOUT = 30.0  # seconds; a request stuck on a restarting API server must not stall a flow


# Connections to the API server kept open by our client. Each TLS connection holds buffers of
# its own (~256 KiB); kubernetes_asyncio's default of 100 made the operator's memory grow
# with the number of resources moving at once. Requests beyond this many wait their turn:
# with 8, at 300 resources (about 40 requests a second, 0.1-0.6 s each on a loaded API
# server) they waited seconds, every status patch after a poll delayed the next poll, and
# the platform was polled 3.0-3.5 times per resource instead of 4 (bench/scale.py).
CONNECTION_POOL_SIZE = 32


def pooled_configuration() -> client.Configuration:
    """The loaded credentials (load_credentials) with a bounded connection pool."""
    configuration = client.Configuration.get_default_copy()
    configuration.connection_pool_maxsize = CONNECTION_POOL_SIZE
    return configuration


class NotFound(Exception):
    """The object does not exist."""


class AlreadyExists(Exception):
    """An object of that name exists already."""


@dataclass(frozen=True, repr=False)
class Credentials:
    """Where the API server is and how to authenticate: one set for kopf and our client."""

    server: str
    ca_path: str | None
    insecure: bool
    token: str | None
    certificate_path: str | None
    private_key_path: str | None
    proxy_url: str | None


async def load_credentials() -> Credentials:
    """Configure kubernetes_asyncio from the pod's service account, or else KUBECONFIG, and
    return the same credentials for kopf (its `@kopf.on.login` handler)."""
    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    except config.ConfigException:
        await config.load_kube_config()
    settings = client.Configuration.get_default_copy()
    # In-cluster, the projected token rotates: this reads the current one (a refresh hook).
    token = await settings.get_api_key_with_prefix("BearerToken")
    scheme_token = str(token).split(" ", 1)[-1] if token else None
    return Credentials(
        server=str(settings.host),
        ca_path=settings.ssl_ca_cert or None,
        insecure=not settings.verify_ssl,
        token=scheme_token,
        certificate_path=settings.cert_file or None,
        private_key_path=settings.key_file or None,
        proxy_url=settings.proxy or None,
    )


def _translate(error: ApiException) -> Exception:
    if error.status == 404:
        return NotFound(error.reason)
    if error.status == 409:
        return AlreadyExists(error.reason)
    return error


def decode_secret(secret: Mapping[str, Any]) -> dict[str, str]:
    """A Secret's data as text (base64 decoded)."""
    data = secret.get("data") or {}
    return {k: base64.b64decode(v).decode() for k, v in data.items()}


def encode_secret_data(values: Mapping[str, str]) -> dict[str, str]:
    return {k: base64.b64encode(v.encode()).decode() for k, v in values.items()}


class ClusterApi(Protocol):
    """The calls the flow makes; `KubeApi` against a cluster, an in-memory fake in unit tests."""

    async def get_upgrade(self, namespace: str, name: str) -> dict[str, Any]: ...

    async def patch_upgrade_status(
        self, namespace: str, name: str, status: Mapping[str, Any]
    ) -> dict[str, Any]: ...

    async def get_secret(self, namespace: str, name: str) -> dict[str, Any]: ...

    async def create_secret(self, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]: ...

    async def patch_secret_data(
        self, namespace: str, name: str, values: Mapping[str, str]
    ) -> dict[str, Any]: ...

    async def delete_secret(self, namespace: str, name: str) -> None: ...

    async def get_pvc(self, namespace: str, name: str) -> dict[str, Any]: ...

    async def get_job(self, namespace: str, name: str) -> dict[str, Any]: ...

    async def list_jobs(self, namespace: str, label_selector: str) -> list[dict[str, Any]]: ...

    async def create_job(self, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]: ...

    async def delete_job(self, namespace: str, name: str) -> None: ...

    async def list_job_pods(self, namespace: str, job_uid: str) -> list[dict[str, Any]]: ...

    async def pod_log_tail(self, namespace: str, pod: str, lines: int = 5) -> str: ...


class KubeApi:
    """Thin async access to the objects an `OdooUpgrade` involves; answers are plain dicts."""

    def __init__(self, api_client: client.ApiClient | None = None) -> None:
        self._api = api_client or client.ApiClient(configuration=pooled_configuration())
        # Names the operator's own requests in the API server's audit log (bench/scale.py).
        self._api.user_agent = f"odoo-upgrade-operator/{__version__}"
        # Typed as Any: the generated signatures want model objects; we pass plain dicts.
        self._core: Any = client.CoreV1Api(self._api)
        self._batch: Any = client.BatchV1Api(self._api)
        self._custom: Any = client.CustomObjectsApi(self._api)

    async def close(self) -> None:
        await self._api.close()

    def _plain(self, obj: Any) -> dict[str, Any]:
        result = self._api.sanitize_for_serialization(obj)
        return dict(result) if isinstance(result, dict) else {}

    # -- OdooUpgrade ---------------------------------------------------------------------------

    async def get_upgrade(self, namespace: str, name: str) -> dict[str, Any]:
        try:
            obj = await self._custom.get_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, name, _request_timeout=TIMEOUT
            )
        except ApiException as error:
            raise _translate(error) from None
        return dict(obj)

    async def patch_upgrade_status(
        self, namespace: str, name: str, status: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Merge-patch `.status` through the status subresource; return the new object."""
        try:
            obj = await self._custom.patch_namespaced_custom_object_status(
                GROUP,
                VERSION,
                namespace,
                PLURAL,
                name,
                {"status": dict(status)},
                _content_type=MERGE_PATCH,
                _request_timeout=TIMEOUT,
            )
        except ApiException as error:
            raise _translate(error) from None
        return dict(obj)

    # -- Secrets -------------------------------------------------------------------------------

    async def get_secret(self, namespace: str, name: str) -> dict[str, Any]:
        try:
            return self._plain(
                await self._core.read_namespaced_secret(name, namespace, _request_timeout=TIMEOUT)
            )
        except ApiException as error:
            raise _translate(error) from None

    async def create_secret(self, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]:
        try:
            return self._plain(
                await self._core.create_namespaced_secret(
                    namespace, dict(body), _request_timeout=TIMEOUT
                )
            )
        except ApiException as error:
            raise _translate(error) from None

    async def patch_secret_data(
        self, namespace: str, name: str, values: Mapping[str, str]
    ) -> dict[str, Any]:
        body = {"data": encode_secret_data(values)}
        try:
            return self._plain(
                await self._core.patch_namespaced_secret(
                    name, namespace, body, _content_type=MERGE_PATCH, _request_timeout=TIMEOUT
                )
            )
        except ApiException as error:
            raise _translate(error) from None

    async def delete_secret(self, namespace: str, name: str) -> None:
        try:
            await self._core.delete_namespaced_secret(name, namespace, _request_timeout=TIMEOUT)
        except ApiException as error:
            if error.status != 404:
                raise

    # -- Volumes -------------------------------------------------------------------------------

    async def get_pvc(self, namespace: str, name: str) -> dict[str, Any]:
        try:
            return self._plain(
                await self._core.read_namespaced_persistent_volume_claim(
                    name, namespace, _request_timeout=TIMEOUT
                )
            )
        except ApiException as error:
            raise _translate(error) from None

    # -- Jobs and their pods ---------------------------------------------------------------------

    async def get_job(self, namespace: str, name: str) -> dict[str, Any]:
        try:
            return self._plain(
                await self._batch.read_namespaced_job(name, namespace, _request_timeout=TIMEOUT)
            )
        except ApiException as error:
            raise _translate(error) from None

    async def list_jobs(self, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        try:
            found = self._plain(
                await self._batch.list_namespaced_job(
                    namespace, label_selector=label_selector, _request_timeout=TIMEOUT
                )
            )
        except ApiException as error:
            raise _translate(error) from None
        return list(found.get("items") or [])

    async def create_job(self, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]:
        try:
            return self._plain(
                await self._batch.create_namespaced_job(
                    namespace, dict(body), _request_timeout=TIMEOUT
                )
            )
        except ApiException as error:
            raise _translate(error) from None

    async def delete_job(self, namespace: str, name: str) -> None:
        """Delete a Job and (in the background) its pods; a missing Job is fine."""
        try:
            await self._batch.delete_namespaced_job(
                name, namespace, propagation_policy="Background", _request_timeout=TIMEOUT
            )
        except ApiException as error:
            if error.status != 404:
                raise

    async def list_job_pods(self, namespace: str, job_uid: str) -> list[dict[str, Any]]:
        pods = await self._core.list_namespaced_pod(
            namespace,
            label_selector=f"batch.kubernetes.io/controller-uid={job_uid}",
            _request_timeout=TIMEOUT,
        )
        return [self._plain(p) for p in pods.items]

    async def pod_log_tail(self, namespace: str, pod: str, lines: int = 5) -> str:
        """The last lines of a pod's log; empty when there is none (yet)."""
        try:
            text = await self._core.read_namespaced_pod_log(
                pod, namespace, tail_lines=lines, _request_timeout=TIMEOUT
            )
        except ApiException:
            return ""
        return str(text or "")
