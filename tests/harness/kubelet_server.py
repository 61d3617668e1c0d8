"""The pod runner's kubelet endpoint: what kube-apiserver calls for ``pods/log``.

HTTPS on 127.0.0.1 with the kubelet serving certificate (tests.harness.certs). A client is
authenticated by a certificate the cluster CA signed (user = CN, groups = O, plus
``system:authenticated``) and authorised as a kubelet in Webhook mode authorises it: a
SubjectAccessReview for ``get nodes/proxy`` on this Node, answers cached (allowed 5 min, denied
30 s, the kubelet's defaults). No certificate: 401; a certificate of another CA fails the TLS
handshake; not allowed: 403. Only ``GET /containerLogs/<namespace>/<pod>/<container>`` is served,
with the query kube-apiserver's LogLocation sends (see tests.harness.podlogs).
"""

from __future__ import annotations

import contextlib
import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from aiohttp import web

from tests.harness.kubeapi import AsyncKubeApi
from tests.harness.podlogs import ContainerLog, ContainerState, LogOptions, LogQueryError, read_log

ALLOWED_TTL_SECONDS = 300.0
DENIED_TTL_SECONDS = 30.0
VERBS = {"GET": "get", "HEAD": "get", "POST": "create", "PUT": "update", "PATCH": "patch"}

log = logging.getLogger("podrunner.kubelet")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ContainerNotFound(Exception):
    """No such pod on this Node, or no such container in it (HTTP 404)."""


class LogSource(Protocol):
    """What the endpoint asks the pod runner."""

    async def container_log(self, namespace: str, pod: str, container: str) -> ContainerLog:
        """The log of a container of a pod bound to this Node; raise ContainerNotFound."""
        ...


@dataclass(frozen=True)
class Identity:
    """Who a verified client certificate names."""

    user: str
    groups: tuple[str, ...]


def peer_identity(peercert: Any) -> Identity | None:
    """User (CN) and groups (O) of a verified peer certificate; None without one."""
    if not peercert:
        return None
    attributes = [pair for rdn in peercert.get("subject", ()) for pair in rdn]
    names = [value for key, value in attributes if key == "commonName"]
    groups = tuple(value for key, value in attributes if key == "organizationName")
    return Identity(names[0], groups) if names else None


def serving_context(cert: Path, key: Path, client_ca: Path) -> ssl.SSLContext:
    """TLS for the endpoint: the kubelet certificate; client certificates checked against the CA
    when given (a request without one reaches the handler and gets 401, as at a kubelet)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(cert), str(key))
    context.load_verify_locations(cafile=str(client_ca))
    context.verify_mode = ssl.CERT_OPTIONAL
    return context


class NodeAuthorizer:
    """SubjectAccessReviews for requests to this Node's kubelet API, with the kubelet's cache."""

    def __init__(self, api: AsyncKubeApi, node_name: str) -> None:
        self.api = api
        self.node_name = node_name
        self._cache: dict[tuple[Identity, str, str], tuple[bool, float]] = {}

    async def allowed(self, identity: Identity, verb: str, subresource: str) -> bool:
        """Whether ``identity`` may ``verb nodes/<subresource>`` on this Node."""
        key = (identity, verb, subresource)
        cached = self._cache.get(key)
        if cached is not None and cached[1] > time.monotonic():
            return cached[0]
        review = await self.api.create(
            "/apis/authorization.k8s.io/v1/subjectaccessreviews",
            {
                "apiVersion": "authorization.k8s.io/v1",
                "kind": "SubjectAccessReview",
                "spec": {
                    "user": identity.user,
                    "groups": [*identity.groups, "system:authenticated"],
                    "resourceAttributes": {
                        "verb": verb,
                        "resource": "nodes",
                        "subresource": subresource,
                        "name": self.node_name,
                    },
                },
            },
        )
        allowed = bool(review.get("status", {}).get("allowed"))
        ttl = ALLOWED_TTL_SECONDS if allowed else DENIED_TTL_SECONDS
        self._cache[key] = (allowed, time.monotonic() + ttl)
        return allowed


def _text(status: int, message: str) -> web.Response:
    return web.Response(status=status, text=message)


class KubeletServer:
    """The HTTPS endpoint; :meth:`start` binds it, :meth:`stop` closes it."""

    def __init__(self, source: LogSource, authorizer: NodeAuthorizer, tls: ssl.SSLContext) -> None:
        self.source = source
        self.authorizer = authorizer
        self.tls = tls
        app = web.Application(middlewares=[self._authenticate])
        app.router.add_get(
            "/containerLogs/{namespace}/{pod}/{container}", self._container_logs, allow_head=False
        )
        # Open follows end with the runner; nothing else is worth waiting for on shutdown.
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)

    async def start(self, port: int) -> int:
        """Listen on 127.0.0.1:``port`` (0: any free port); return the port."""
        await self._runner.setup()
        site = web.TCPSite(
            self._runner, "127.0.0.1", port, ssl_context=self.tls, reuse_address=True
        )
        await site.start()
        bound: int = self._runner.addresses[0][1]
        return bound

    async def stop(self) -> None:
        """Stop listening and end open requests."""
        await self._runner.cleanup()

    @web.middleware
    async def _authenticate(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        transport = request.transport
        identity = peer_identity(transport.get_extra_info("peercert") if transport else None)
        if identity is None:
            log.warning("kubelet API: %s refused: no client certificate", request.path)
            return _text(401, "Unauthorized")
        verb = VERBS.get(request.method, "get")
        try:
            allowed = await self.authorizer.allowed(identity, verb, "proxy")
        except Exception as error:
            log.warning("kubelet API: authorising %s failed: %s", identity.user, error)
            return _text(
                500,
                f"Authorization error (user={identity.user}, verb={verb}, resource=nodes, "
                "subresource=proxy)",
            )
        if not allowed:
            log.warning("kubelet API: %s forbidden for %s", request.path, identity.user)
            return _text(
                403,
                f"Forbidden (user={identity.user}, verb={verb}, resource=nodes, "
                "subresource(s)=[proxy])\n",
            )
        return await handler(request)

    async def _container_logs(self, request: web.Request) -> web.StreamResponse:
        namespace = request.match_info["namespace"]
        pod = request.match_info["pod"]
        container = request.match_info["container"]
        try:
            options = LogOptions.from_query(dict(request.query))
            container_log = await self.source.container_log(namespace, pod, container)
        except LogQueryError as error:
            return _text(error.status, error.message)
        except ContainerNotFound as error:
            return _text(404, str(error))
        # The kubelet's validateContainerLogStatus: no earlier run, nothing to show yet.
        if options.previous:
            return _text(
                400, f'previous terminated container "{container}" in pod "{pod}" not found'
            )
        if container_log.state is ContainerState.WAITING:
            waiting = f'container "{container}" in pod "{pod}" is waiting to start'
            return _text(400, f"{waiting}: ContainerCreating")
        log.info(
            "kubelet API: logs of %s/%s/%s ?%s", namespace, pod, container, request.query_string
        )
        response = web.StreamResponse(headers={"Content-Type": "text/plain; charset=utf-8"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        with contextlib.suppress(ConnectionError):
            async for chunk in read_log(container_log, options):
                if request.transport is None or request.transport.is_closing():
                    break  # the client went away during a follow
                if chunk:
                    await response.write(chunk)
            await response.write_eof()
        return response
