"""Platform failures as exceptions, split by what the caller should do about them.

The platform answers `{"failures": [...]}`; HTTP status codes are not documented, so the
`failures` list is the truth. Permanent failures must not be retried (a retry could create a
second paid request); transient ones are retried with backoff.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Reasons the platform uses for passing trouble on its side; anything else is permanent.
TRANSIENT_REASONS = frozenset({"SERVER:ERROR"})


@dataclass(frozen=True)
class Failure:
    """One entry of the platform's `failures` list, kept as the platform sent it."""

    reason: str
    message: str
    code: str | None = None
    value: str | None = None
    expected: list[str] | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Failure:
        expected = data.get("expected")
        return cls(
            reason=str(data.get("reason", "UNKNOWN")),
            message=str(data.get("message", "")),
            code=None if data.get("code") is None else str(data["code"]),
            value=None if data.get("value") is None else str(data["value"]),
            expected=[str(e) for e in expected] if isinstance(expected, list) else None,
        )

    def to_json(self) -> dict[str, Any]:
        """The failure as a dict without empty keys (the shape stored in `.status.failures`)."""
        out: dict[str, Any] = {"reason": self.reason, "message": self.message}
        for name in ("code", "value", "expected"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        return out

    def describe(self) -> str:
        text = f"{self.reason}: {self.message}"
        if self.expected:
            text += f" (expected one of: {', '.join(self.expected)})"
        return text


class PlatformError(Exception):
    """Base of every error raised while talking to the Upgrade Platform."""

    transient: bool = False


@dataclass
class PlatformFailure(PlatformError):
    """The platform answered with a non-empty `failures` list."""

    method: str
    failures: list[Failure] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__init__(str(self))

    @property
    def transient(self) -> bool:  # type: ignore[override]
        return bool(self.failures) and all(f.reason in TRANSIENT_REASONS for f in self.failures)

    def __str__(self) -> str:
        return f"{self.method}: " + "; ".join(f.describe() for f in self.failures)


class PlatformUnavailable(PlatformError):
    """Network error, timeout or 5xx without usable failures: worth retrying."""

    transient = True


class PlatformProtocolError(PlatformError):
    """The answer was not the JSON shape the API documents (permanent: retrying won't fix it)."""

    transient = False


class PlatformOutcomeUnknown(PlatformUnavailable):
    """`create` was sent but no answer came back: the request may or may not exist.

    Not retried automatically (`transient` is False): a second `create` could open a second
    request. A human should check the platform (or the email it sends) before trying again.
    """

    transient = False


class PlatformNotReached(PlatformUnavailable):
    """The call never reached the platform (connection refused, connect timeout)."""


class PlatformServerError(PlatformUnavailable):
    """The platform answered 5xx (or 429) without a `failures` list, or kept saying
    `SERVER:ERROR`. `status_code` is None for the latter (the platform's own word)."""

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


# Answers that say the server did not act on the request: 503 (unavailable) and 429 (rate
# limited) come from the server itself. A 502/504 comes from a gateway that may have passed
# the request on before the upstream answer was lost; a 500 may come after acting.
NOT_ACTED_STATUSES = frozenset({503, 429})


def platform_surely_did_not_act(exc: BaseException) -> bool:
    """Whether a failed `create` may be sent again without risking a second request."""
    if isinstance(exc, PlatformNotReached):
        return True
    if isinstance(exc, PlatformServerError):
        return exc.status_code is None or exc.status_code in NOT_ACTED_STATUSES
    return isinstance(exc, PlatformFailure) and exc.transient
