"""The operator's own settings (flags of `odoo-upgrade operator`), read by the flow.

Set once at start by the entry point (`configure`); tests configure what they need. Every check
of a flag's value lives here, so a bad value is refused at start with a message naming the flag
(`SettingError`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from decimal import Decimal

from odoo_upgrade.request.allowlist import check_allowed_url
from odoo_upgrade.request.platform import DEFAULT_PLATFORM_URL

DEFAULT_MAX_MOVER_RETRIES = 10
DEFAULT_MOVER_ACTIVE_DEADLINE_SECONDS = 6 * 3600
DEFAULT_MOVER_CPU_REQUEST = "50m"
DEFAULT_MOVER_MEMORY_REQUEST = "64Mi"
DEFAULT_MOVER_CPU_LIMIT = "1"
DEFAULT_MOVER_MEMORY_LIMIT = "256Mi"

# A Kubernetes resource quantity ("50m", "1", "1.5", "256Mi", "1e3"), as the API server parses it.
_QUANTITY = re.compile(
    r"^(?P<number>[+-]?(?:\d+(?:\.\d*)?|\.\d+))(?P<suffix>[KMGTPE]i|[numkMGTPE]|[eE][+-]?\d+)?$"
)
_SUFFIXES = {
    "": Decimal(1),
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
    **{s: Decimal(1024) ** (i + 1) for i, s in enumerate(("Ki", "Mi", "Gi", "Ti", "Pi", "Ei"))},
}


class SettingError(ValueError):
    """A flag's value is invalid; the message names the flag and what was expected."""

    def __init__(self, flag: str, problem: str) -> None:
        self.flag = flag
        super().__init__(f"{flag}: {problem}")


def parse_quantity(text: str, flag: str) -> Decimal:
    """The value of a Kubernetes resource quantity ("50m" → 0.05, "64Mi" → 67108864)."""
    match = _QUANTITY.match(text.strip())
    if match is None:
        raise SettingError(
            flag,
            f'expected a Kubernetes quantity such as "100m", "1", "256Mi" or "1Gi", got {text!r}',
        )
    suffix = match["suffix"] or ""
    number = Decimal(match["number"])
    if len(suffix) > 1 and suffix[0] in "eE" and suffix[1] != "i":
        value = number * Decimal(10) ** int(suffix[1:])
    else:
        value = number * _SUFFIXES[suffix]
    if value <= 0:
        raise SettingError(flag, f"must be more than zero, got {text!r}")
    return value


@dataclass(frozen=True)
class MoverResources:
    """Requests and limits of mover containers."""

    cpu_request: str = DEFAULT_MOVER_CPU_REQUEST
    memory_request: str = DEFAULT_MOVER_MEMORY_REQUEST
    cpu_limit: str = DEFAULT_MOVER_CPU_LIMIT
    memory_limit: str = DEFAULT_MOVER_MEMORY_LIMIT

    def __post_init__(self) -> None:
        for resource in ("cpu", "memory"):
            request_flag, limit_flag = f"--mover-{resource}-request", f"--mover-{resource}-limit"
            request_text = getattr(self, f"{resource}_request")
            limit_text = getattr(self, f"{resource}_limit")
            # The API server would refuse every mover Job; say so at start instead.
            if parse_quantity(request_text, request_flag) > parse_quantity(limit_text, limit_flag):
                raise SettingError(
                    request_flag, f"must not exceed {limit_flag} ({request_text} > {limit_text})"
                )

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
    max_mover_retries: int = DEFAULT_MAX_MOVER_RETRIES
    mover_active_deadline_seconds: int | None = DEFAULT_MOVER_ACTIVE_DEADLINE_SECONDS
    mover_resources: MoverResources = field(default_factory=MoverResources)
    database_image: str | None = None  # dump/restore Jobs; None: the mover image
    # First wait before a failed mover is tried again (it doubles, up to 60 times this):
    # not a flag; tests that drive retries shorten it.
    mover_retry_base_seconds: float = 5.0

    def __post_init__(self) -> None:
        if not self.allowed_platform_urls:
            raise SettingError("--allowed-platform-url", "at least one URL is required")
        for url in self.allowed_platform_urls:
            try:
                check_allowed_url(url)
            except ValueError as error:
                raise SettingError("--allowed-platform-url", str(error)) from None
        if self.max_mover_retries < 0:
            raise SettingError(
                "--max-mover-retries", f"must be zero or more, got {self.max_mover_retries}"
            )
        deadline = self.mover_active_deadline_seconds
        if deadline is not None and deadline <= 0:
            raise SettingError(
                "--mover-active-deadline-seconds", f"must be more than zero, got {deadline}"
            )
        if self.database_image is not None and not self.database_image.strip():
            raise SettingError("--database-image", "must not be empty")


def allowed_urls(urls: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """The values of `--allowed-platform-url`, each checked and normalised, duplicates dropped."""
    checked: list[str] = []
    for url in urls:
        try:
            normal = check_allowed_url(url)
        except ValueError as error:
            raise SettingError("--allowed-platform-url", str(error)) from None
        if normal not in checked:
            checked.append(normal)
    return tuple(checked)


_current = OperatorSettings()


def configure(settings: OperatorSettings) -> None:
    """Make `settings` the process's settings (called once, before kopf starts)."""
    global _current
    _current = settings


def current() -> OperatorSettings:
    """The process's settings: the defaults until `configure()` is called."""
    return _current
