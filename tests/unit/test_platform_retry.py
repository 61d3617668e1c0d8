"""Backoff bounds of RetryPolicy and the retry loop's accounting of tries."""

from __future__ import annotations

import random

import pytest

from odoo_upgrade.platform.retry import RetryPolicy, retry_async


def test_delays_without_jitter_double_up_to_the_cap() -> None:
    policy = RetryPolicy(attempts=7, base_delay=1.0, max_delay=10.0, jitter=False)
    assert list(policy.delays()) == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]


def test_full_jitter_stays_between_zero_and_the_exponential_ceiling() -> None:
    policy = RetryPolicy(attempts=12, base_delay=0.5, max_delay=4.0)
    rng = random.Random(7)
    for _ in range(200):
        for attempt, delay in enumerate(policy.delays(rng), start=2):
            ceiling = min(4.0, 0.5 * 2 ** (attempt - 2))
            assert 0.0 <= delay <= ceiling


def test_jitter_spreads_clients_apart() -> None:
    policy = RetryPolicy(attempts=2, base_delay=1.0, max_delay=1.0)
    rng = random.Random(1)
    assert len({policy.delay_before(2, rng) for _ in range(20)}) > 1


def test_very_late_attempts_do_not_overflow() -> None:
    policy = RetryPolicy(attempts=5000, base_delay=1.0, max_delay=3.0, jitter=False)
    assert policy.delay_before(4000) == 3.0


def test_attempts_below_one_are_refused_with_the_field_name() -> None:
    with pytest.raises(ValueError, match="attempts"):
        RetryPolicy(attempts=0)


class Flaky(Exception):
    pass


class Fatal(Exception):
    pass


async def test_retry_stops_after_exactly_attempts_tries() -> None:
    tries = 0

    async def always_flaky() -> None:
        nonlocal tries
        tries += 1
        raise Flaky

    with pytest.raises(Flaky):
        await retry_async(
            RetryPolicy(attempts=4, base_delay=0.0), always_flaky, retryable=lambda e: True
        )
    assert tries == 4


async def test_retry_returns_result_and_tries_used() -> None:
    tries = 0

    async def second_time_lucky() -> str:
        nonlocal tries
        tries += 1
        if tries < 2:
            raise Flaky
        return "ok"

    result = await retry_async(
        RetryPolicy(attempts=5, base_delay=0.0), second_time_lucky, retryable=lambda e: True
    )
    assert result == ("ok", 2)


async def test_permanent_errors_are_not_retried() -> None:
    tries = 0

    async def fatal() -> None:
        nonlocal tries
        tries += 1
        raise Fatal

    with pytest.raises(Fatal):
        await retry_async(
            RetryPolicy(attempts=5, base_delay=0.0),
            fatal,
            retryable=lambda e: isinstance(e, Flaky),
        )
    assert tries == 1
