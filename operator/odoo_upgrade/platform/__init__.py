"""Upgrade Platform v1 client. Knows nothing of Kubernetes."""

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

__all__ = [
    "DEFAULT_BASE_URL",
    "Failure",
    "PlatformClient",
    "PlatformError",
    "PlatformFailure",
    "PlatformNotReached",
    "PlatformOutcomeUnknown",
    "PlatformProtocolError",
    "PlatformServerError",
    "PlatformUnavailable",
    "RetryPolicy",
    "SftpAccess",
    "UpgradeRequest",
]
