"""Bounded exponential backoff with full jitter, shared by the client and the transfers."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry a transient failure.

    `attempts` counts every try, the first included (1 means "never retry"). The delay before
    try n+1 is drawn uniformly from [0, min(max_delay, base_delay * 2**(n-1))] ("full jitter",
    so that many clients failing together do not retry in lockstep); without jitter it is the
    upper bound itself.
    """

    attempts: int = 5
    base_delay: float = 1.0
    max_delay: float = 30.0
    jitter: bool = True

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"RetryPolicy.attempts must be >= 1, got {self.attempts}")
        if self.base_delay < 0 or self.max_delay < 0:
            raise ValueError("RetryPolicy delays must be >= 0")

    def delay_before(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before try number `attempt` (2 is the first retry)."""
        if attempt < 2:
            return 0.0
        # Cap the exponent: 2**1000 would overflow a float long before max_delay matters.
        ceiling = min(self.max_delay, self.base_delay * 2.0 ** min(attempt - 2, 62))
        if not self.jitter:
            return ceiling
        return (rng or random).uniform(0.0, ceiling)

    def delays(self, rng: random.Random | None = None) -> Iterator[float]:
        """The waits between tries: `attempts - 1` values."""
        for attempt in range(2, self.attempts + 1):
            yield self.delay_before(attempt, rng)


async def retry_async(
    policy: RetryPolicy,
    operation: Callable[[], Awaitable[T]],
    *,
    retryable: Callable[[BaseException], bool],
) -> tuple[T, int]:
    """Run `operation` until it succeeds or fails for good; return (result, tries used).

    An exception for which `retryable` is false, or the last try's exception, propagates.
    """
    attempt = 1
    while True:
        try:
            return await operation(), attempt
        except Exception as exc:
            if attempt >= policy.attempts or not retryable(exc):
                raise
        attempt += 1
        await asyncio.sleep(policy.delay_before(attempt))
