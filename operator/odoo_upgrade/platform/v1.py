"""The database/v1 API as a `Platform` (odoo_upgrade.request.platform) for the flow."""

from __future__ import annotations

from typing import Any

from odoo_upgrade.platform.client import PlatformClient
from odoo_upgrade.platform.models import SftpAccess, UpgradeRequest
from odoo_upgrade.platform.retry import RetryPolicy
from odoo_upgrade.request import secret_keys as keys
from odoo_upgrade.request.platform import (
    CreatedRequest,
    PlatformApi,
    PlatformStatus,
    RequestOrder,
    RequestRef,
)
from odoo_upgrade.request.states import V1_STATES

# Keys of `.status.platform` (so that a key the platform stopped sending is removed).
PUBLIC_KEYS = (
    "state",
    "issueStage",
    "estimatedTime",
    "processedAt",
    "elapsed",
    "databaseVersion",
    "postgresql",
    "compressions",
    "filesize",
    "customerMessage",
)


def public_status(request: UpgradeRequest) -> PlatformStatus:
    """What the flow may show of a v1 request: every public key (None where not sent)."""
    view = request.public_view()
    return PlatformStatus(
        state=request.state,
        state_class=V1_STATES.classify(request.state),
        public={key: view.get(key) for key in PUBLIC_KEYS},
        message=request.customer_message,
    )


class DatabaseV1:
    """`Platform` over `PlatformClient`; also grants SFTP access (`SftpGranting`)."""

    api = PlatformApi.DATABASE_V1
    states = V1_STATES

    def __init__(self, base_url: str, *, retry: RetryPolicy | None = None) -> None:
        self.client = PlatformClient(base_url, retry=retry)

    async def __aenter__(self) -> DatabaseV1:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.client.aclose()

    async def create(self, order: RequestOrder) -> CreatedRequest:
        request = await self.client.create(
            contract=order.contract,
            email=order.email,
            target=order.target,
            aim=order.aim,
            filename=order.filename,
            timezone=order.timezone,
        )
        return CreatedRequest(
            ref=RequestRef(request.id, request.key),
            state=request.state,
            secret_values={keys.REQUEST_ID: str(request.id), keys.KEY: request.key},
        )

    async def status(self, ref: RequestRef) -> PlatformStatus:
        return public_status(await self.client.status(ref.request_id, ref.secret))

    async def request(self, ref: RequestRef) -> UpgradeRequest:
        """The whole v1 request, URLs included (secrets: for the mover's download only)."""
        return await self.client.status(ref.request_id, ref.secret)

    async def process(self, ref: RequestRef) -> dict[str, Any]:
        await self.client.process(ref.request_id, ref.secret)
        return {}

    async def log_tail(self, ref: RequestRef, from_byte: int) -> tuple[str, int]:
        """database/v1 serves no upgrade log."""
        return "", from_byte

    async def request_sftp_access(self, request_id: int, key: str, ssh_keys: str) -> SftpAccess:
        return await self.client.request_sftp_access(request_id, key, ssh_keys)
