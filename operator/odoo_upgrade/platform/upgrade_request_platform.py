"""The upgrade/request API as a `Platform` (odoo_upgrade.request.platform) for the flow.

`create` sends the SSH public key (the order's, or a new pair's) and `env_vars`; the
request Secret then holds `requestId`, `token` and `assignedHost` (`secret_values`). Every
later call goes to the assigned host of the `RequestRef`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from odoo_upgrade.platform.retry import RetryPolicy
from odoo_upgrade.platform.upgrade_request import RequestStatus, UpgradeRequestClient
from odoo_upgrade.redact import register_secret
from odoo_upgrade.request import secret_keys as keys
from odoo_upgrade.request.platform import (
    CreatedRequest,
    PlatformApi,
    PlatformStatus,
    RequestOrder,
    RequestRef,
)
from odoo_upgrade.request.ssh_keys import generate_ssh_keypair
from odoo_upgrade.request.states import UPGRADE_REQUEST_STATES

# Keys of `.status.platform` (so that a key the platform stopped sending is removed).
PUBLIC_KEYS = ("state", "reason", "archived", "assignedHost")


def public_status(status: RequestStatus, assigned_host: str | None) -> PlatformStatus:
    """What the flow may show of a request: state, reason, archived, the host (no token)."""
    return PlatformStatus(
        state=status.status,
        state_class=UPGRADE_REQUEST_STATES.classify(status.status),
        public={
            "state": status.status,
            "reason": status.reason,
            "archived": status.archived,
            "assignedHost": status.host_uri or assigned_host,
        },
        message=status.reason,
    )


class UpgradeRequestPlatform:
    """`Platform` over `UpgradeRequestClient`, one client per request host."""

    api = PlatformApi.UPGRADE_REQUEST
    states = UPGRADE_REQUEST_STATES

    def __init__(
        self,
        base_url: str,
        *,
        allow_insecure_hosts: Iterable[str] = (),
        retry: RetryPolicy | None = None,
    ) -> None:
        self.base_url = base_url
        self.allow_insecure_hosts = frozenset(allow_insecure_hosts)
        self.retry = retry
        self._clients: dict[str | None, UpgradeRequestClient] = {}
        self.client(None)  # checks the base URL now, not at the first call

    def client(self, assigned_host: str | None) -> UpgradeRequestClient:
        """The client whose calls go to `assigned_host` (None: the platform base URL)."""
        if assigned_host not in self._clients:
            self._clients[assigned_host] = UpgradeRequestClient(
                self.base_url,
                assigned_host_uri=assigned_host,
                allow_insecure_hosts=self.allow_insecure_hosts,
                retry=self.retry,
            )
        return self._clients[assigned_host]

    async def __aenter__(self) -> UpgradeRequestPlatform:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()

    async def create(self, order: RequestOrder) -> CreatedRequest:
        """`create` with the request's SSH public key (a new pair unless the order has one);
        the private half is stored with the token, before anything else happens."""
        keypair = None
        public_key = order.ssh_public_key
        if not public_key:
            keypair = generate_ssh_keypair()
            register_secret(keypair.private_pem)
            public_key = keypair.public_line
        # Its own client: `create` switches a client to the assigned host for good.
        async with UpgradeRequestClient(
            self.base_url, allow_insecure_hosts=self.allow_insecure_hosts, retry=self.retry
        ) as creator:
            created = await creator.create(
                contract=order.contract,
                target=order.target,
                aim=order.aim,
                env_vars=order.env_vars,
                ssh_key=public_key,
            )
        values = {
            keys.REQUEST_ID: str(created.request_id),
            keys.TOKEN: created.token,
            keys.ASSIGNED_HOST: created.assigned_host_uri,
        }
        if keypair is not None:
            values[keys.SSH_PRIVATE_KEY] = keypair.private_pem
            values[keys.SSH_PUBLIC_KEY] = keypair.public_line
        return CreatedRequest(
            ref=RequestRef(created.request_id, created.token, created.assigned_host_uri),
            state="new",
            secret_values=values,
            info=created.info,
        )

    async def status(self, ref: RequestRef) -> PlatformStatus:
        status = await self.client(ref.host).status(ref.secret)
        return public_status(status, ref.host)

    async def process(self, ref: RequestRef) -> dict[str, Any]:
        compatible = await self.client(ref.host).process(ref.secret)
        return {} if compatible is None else {"pgVersionCompatible": compatible}

    async def log_tail(self, ref: RequestRef, from_byte: int) -> tuple[str, int]:
        """The upgrade log from `from_byte` on, and the offset to ask from next time."""
        return await self.client(ref.host).logs(ref.secret, from_byte)
