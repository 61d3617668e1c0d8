"""Upgrade Platform clients: v1 (`database/v1`) and today's `upgrade/request` API.

Knows nothing of Kubernetes.
"""

from odoo_upgrade.platform.client import DEFAULT_BASE_URL, PlatformClient
from odoo_upgrade.platform.errors import (
    Failure,
    PlatformError,
    PlatformFailure,
    PlatformNotReached,
    PlatformOutcomeUnknown,
    PlatformProtocolError,
    PlatformServerError,
    PlatformUnavailable,
)
from odoo_upgrade.platform.models import SftpAccess, UpgradeRequest
from odoo_upgrade.platform.retry import RetryPolicy
from odoo_upgrade.platform.upgrade_request import (
    CreatedRequest,
    RequestStatus,
    TransferWindow,
    UpgradeRequestClient,
    WipeResult,
)

__all__ = [
    "DEFAULT_BASE_URL",
    "CreatedRequest",
    "Failure",
    "PlatformClient",
    "PlatformError",
    "PlatformFailure",
    "PlatformNotReached",
    "PlatformOutcomeUnknown",
    "PlatformProtocolError",
    "PlatformServerError",
    "PlatformUnavailable",
    "RequestStatus",
    "RetryPolicy",
    "SftpAccess",
    "TransferWindow",
    "UpgradeRequest",
    "UpgradeRequestClient",
    "WipeResult",
]
