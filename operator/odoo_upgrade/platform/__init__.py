"""Upgrade Platform v1 client. Knows nothing of Kubernetes."""

from odoo_upgrade.platform.errors import (
    Failure,
    PlatformError,
    PlatformFailure,
    PlatformProtocolError,
    PlatformUnavailable,
)
from odoo_upgrade.platform.models import SftpAccess, UpgradeRequest

__all__ = [
    "Failure",
    "PlatformError",
    "PlatformFailure",
    "PlatformProtocolError",
    "PlatformUnavailable",
    "SftpAccess",
    "UpgradeRequest",
]
