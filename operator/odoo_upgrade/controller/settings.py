"""The operator's own settings (flags of `odoo-upgrade operator`), read by the flow.

Set once at start by the entry point (`configure`); tests configure what they need.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from odoo_upgrade.request.platform import DEFAULT_PLATFORM_URL


@dataclass(frozen=True)
class MoverResources:
    """Requests and limits of mover containers."""

    cpu_request: str = "50m"
    memory_request: str = "64Mi"
    cpu_limit: str = "1"
    memory_limit: str = "256Mi"

    def to_json(self) -> dict[str, dict[str, str]]:
        return {
            "requests": {"cpu": self.cpu_request, "memory": self.memory_request},
            "limits": {"cpu": self.cpu_limit, "memory": self.memory_limit},
        }


@dataclass(frozen=True)
class OperatorSettings:
    """What an operator was told on its command line."""

    # Platform URLs this operator may contact (scheme, host, port exactly; path prefix).
    allowed_platform_urls: tuple[str, ...] = (DEFAULT_PLATFORM_URL,)
    # Transient mover failures retried (growing delays) before the upgrade fails.
    max_mover_retries: int = 10
    mover_active_deadline_seconds: int | None = 6 * 3600
    mover_resources: MoverResources = field(default_factory=MoverResources)
    database_image: str | None = None  # dump/restore Jobs; None: the mover image


_current = OperatorSettings()


def configure(settings: OperatorSettings) -> None:
    global _current
    _current = settings


def current() -> OperatorSettings:
    return _current
