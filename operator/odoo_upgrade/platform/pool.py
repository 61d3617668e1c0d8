"""One platform client per (API, URL), reused across calls of a long-running process.

Opening a client per call costs a TLS context and a handshake each time; the operator makes
thousands of calls an hour across its resources.
"""

from __future__ import annotations

from collections.abc import Iterable

from odoo_upgrade.platform.apis import open_platform
from odoo_upgrade.request.platform import Platform


class PlatformPool:
    """Clients by (api, url, plain-http hosts); `aclose()` closes them all."""

    def __init__(self) -> None:
        self._clients: dict[tuple[str, str, frozenset[str]], Platform] = {}

    def get(self, api: str, base_url: str, *, plain_http_hosts: Iterable[str] = ()) -> Platform:
        hosts = frozenset(plain_http_hosts)
        key = (api, base_url, hosts)
        if key not in self._clients:
            self._clients[key] = open_platform(api, base_url, plain_http_hosts=hosts)
        return self._clients[key]

    async def aclose(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.aclose()
