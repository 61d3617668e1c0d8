"""The pure parts of leader election: who the operator is, where its Lease lives, timings the
election library accepts, times written the way a Lease holds them, and the renewal watchdog.
The election against a real API server is tests/e2e/test_operator_leader_election.py."""

from __future__ import annotations

import re
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import pytest
from kubernetes_asyncio.leaderelection.electionconfig import Config

from odoo_upgrade.controller.leadership import (
    LeaseTimings,
    RenewalWatchdog,
    _micro_time,
    lease_record,
    own_identity,
    own_namespace,
)


def test_namespace_comes_from_the_service_account_then_pod_namespace(tmp_path: Path) -> None:
    account = tmp_path / "namespace"
    account.write_text("odoo-upgrade-system\n")
    assert own_namespace({"POD_NAMESPACE": "other"}, account) == "odoo-upgrade-system"
    missing = tmp_path / "absent"
    assert own_namespace({"POD_NAMESPACE": "from-env"}, missing) == "from-env"
    assert own_namespace({}, missing) is None


def test_identity_is_the_pod_name_or_host_and_pid() -> None:
    assert own_identity({"POD_NAME": "operator-7d9c-abcde"}) == "operator-7d9c-abcde"
    assert re.fullmatch(r".+-\d+", own_identity({}))


def test_default_timings_meet_the_election_library_and_the_takeover_bound() -> None:
    timings = LeaseTimings()
    Config(
        lock=SimpleNamespace(),  # type: ignore[arg-type]
        lease_duration=timings.lease_duration,
        renew_deadline=timings.renew_deadline,
        retry_period=timings.retry_period,
        onstarted_leading=lambda: None,  # type: ignore[arg-type,return-value]
        onstopped_leading=lambda: None,  # type: ignore[arg-type,return-value]
    )
    # A leader gives up before a standby may take over; a standby needs at most
    # lease_duration + one retry after the leader's death.
    assert timings.renew_deadline < timings.lease_duration
    assert timings.lease_duration + 2 * timings.retry_period <= 30
    assert 2 * timings.call_timeout <= timings.renew_deadline


def test_times_round_trip_between_the_library_and_the_lease() -> None:
    # The library writes `str(datetime.fromtimestamp(t))`: local and naive.
    written = str(datetime.fromtimestamp(1_780_000_000.123456))
    micro = _micro_time(written)
    assert micro == "2026-05-28T20:26:40.123456Z"
    stored = datetime(2026, 5, 28, 20, 26, 40, 123456, tzinfo=UTC)
    spec = SimpleNamespace(
        holder_identity="a", lease_duration_seconds=15, acquire_time=stored, renew_time=stored
    )
    record = lease_record(SimpleNamespace(spec=spec))
    assert (record.holder_identity, record.lease_duration) == ("a", "15")
    assert record.renew_time == written  # unchanged: the library sees no spurious change


def test_a_lease_without_holder_reads_as_free() -> None:
    spec = SimpleNamespace(
        holder_identity="", lease_duration_seconds=1, acquire_time=None, renew_time=None
    )
    assert lease_record(SimpleNamespace(spec=spec)).holder_identity is None
    assert lease_record(SimpleNamespace(spec=None)).holder_identity is None


def test_watchdog_fires_once_renewals_stop_and_not_before() -> None:
    fired = threading.Event()
    reasons: list[str] = []

    def expired(reason: str) -> None:  # in the operator: stop_acting, which exits
        reasons.append(reason)
        fired.set()

    watchdog = RenewalWatchdog(0.6, expired)
    watchdog.start()
    try:
        for _ in range(5):  # renewed every 0.2 s for a second: never fires
            time.sleep(0.2)
            watchdog.renewed()
        assert not fired.is_set()
        assert fired.wait(3), "no renewal for longer than the deadline, yet still acting"
        assert "not renewed" in reasons[0]
    finally:
        watchdog.stop()


def test_a_stopped_watchdog_never_fires() -> None:
    fired = threading.Event()

    def expired(reason: str) -> None:
        fired.set()

    watchdog = RenewalWatchdog(0.3, expired)
    watchdog.start()
    watchdog.stop()
    assert not fired.wait(1.0)


@pytest.mark.parametrize("value", [None, ""])
def test_no_time_is_no_micro_time(value: str | None) -> None:
    assert _micro_time(value) is None
