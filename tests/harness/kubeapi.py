"""Minimal Kubernetes API access for the harness: HTTPS with the admin client certificate.

The pod runner and the cluster bootstrap need a handful of calls (get, create, patch, delete,
watch); plain httpx keeps them explicit and free of client-library version quirks.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx

JsonObject = dict[str, Any]
RETRIED_STATUSES = frozenset({429, 500, 502, 503, 504})


def admin_ssl_context(pki_dir: Path) -> ssl.SSLContext:
    """TLS context that trusts the test CA and presents the admin (system:masters) certificate."""
    context = ssl.create_default_context(cafile=str(pki_dir / "ca.crt"))
    context.load_cert_chain(str(pki_dir / "admin.crt"), str(pki_dir / "admin.key"))
    return context


def admin_client(server: str, pki_dir: Path, *, timeout: float = 30.0) -> httpx.Client:
    """A blocking httpx client for ``server`` authenticated as cluster admin."""
    return httpx.Client(base_url=server, verify=admin_ssl_context(pki_dir), timeout=timeout)


class ApiError(Exception):
    """The apiserver answered with an error status."""

    def __init__(self, method: str, path: str, status: int, body: str) -> None:
        super().__init__(f"{method} {path}: HTTP {status}: {body[:500]}")
        self.status = status


class AsyncKubeApi:
    """Async JSON calls against the apiserver (admin identity)."""

    retry_seconds = 60.0

    def __init__(self, server: str, pki_dir: Path) -> None:
        self._client = httpx.AsyncClient(
            base_url=server, verify=admin_ssl_context(pki_dir), timeout=30.0
        )

    async def close(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: JsonObject | None = None,
        params: dict[str, str] | None = None,
        content_type: str = "application/json",
    ) -> JsonObject:
        """Send one request; raise :class:`ApiError` on a non-2xx answer.

        Connection failures and 429/5xx answers are retried for up to :attr:`retry_seconds`
        (an apiserver restart, an overloaded machine); callers treat 409/404 on a retried
        create/delete as "already done".
        """
        content = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": content_type, "Accept": "application/json"}
        deadline = time.monotonic() + self.retry_seconds
        delay = 0.2
        while True:
            try:
                response = await self._client.request(
                    method, path, params=params, content=content, headers=headers
                )
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
            else:
                if response.status_code not in RETRIED_STATUSES or time.monotonic() > deadline:
                    break
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)
        if response.status_code >= 300:
            raise ApiError(method, path, response.status_code, response.text)
        result: JsonObject = response.json() if response.content else {}
        return result

    async def get(self, path: str, params: dict[str, str] | None = None) -> JsonObject:
        """GET ``path``."""
        return await self.request("GET", path, params=params)

    async def create(self, path: str, body: JsonObject) -> JsonObject:
        """POST ``body`` to the collection ``path``."""
        return await self.request("POST", path, body=body)

    async def strategic_patch(self, path: str, body: JsonObject) -> JsonObject:
        """Strategic-merge-patch ``path`` (lists such as conditions merge by their key)."""
        return await self.request(
            "PATCH", path, body=body, content_type="application/strategic-merge-patch+json"
        )

    async def delete(self, path: str, body: JsonObject | None = None) -> JsonObject:
        """DELETE ``path`` with optional DeleteOptions."""
        return await self.request("DELETE", path, body=body)

    async def watch(self, path: str, params: dict[str, str]) -> AsyncIterator[JsonObject]:
        """Yield watch events (``{"type", "object"}``) until the server ends the stream."""
        query = {**params, "watch": "1", "allowWatchBookmarks": "true"}
        async with self._client.stream(
            "GET", path, params=query, timeout=httpx.Timeout(30.0, read=None)
        ) as response:
            if response.status_code >= 300:
                body = (await response.aread()).decode(errors="replace")
                raise ApiError("WATCH", path, response.status_code, body)
            async for line in response.aiter_lines():
                if line.strip():
                    event: JsonObject = json.loads(line)
                    yield event
