"""The operator's /metrics: resources by phase, platform calls and errors, bytes moved and step
durations, the event loop's lag, served over HTTP from the operator's own registry."""

from __future__ import annotations

import asyncio
import time
import urllib.request

from odoo_upgrade.controller import metrics
from odoo_upgrade.controller.loop_lag import sample_loop_lag
from tests.harness.ports import free_port


def test_metrics_endpoint_serves_the_operators_series() -> None:
    metrics.record_phase("uid-a", "Uploading")
    metrics.record_phase("uid-b", "Uploading")
    metrics.record_phase("uid-b", "Processing")
    metrics.PLATFORM_CALLS.labels(method="create").inc()
    metrics.PLATFORM_ERRORS.labels(method="create", reason="TARGET:INVALID").inc()
    metrics.BYTES_MOVED.labels(direction="upload").inc(1024)
    metrics.STEP_DURATION.labels(step="poll").observe(0.2)
    metrics.EVENT_LOOP_LAG.observe(0.002)
    port = free_port()
    metrics.serve(port, address="127.0.0.1")
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    assert 'odoo_upgrade_resources{phase="Uploading"} 1.0' in text
    assert 'odoo_upgrade_resources{phase="Processing"} 1.0' in text
    assert 'odoo_upgrade_resources{phase="Failed"} 0.0' in text
    assert 'odoo_upgrade_platform_calls_total{method="create"}' in text
    assert 'odoo_upgrade_platform_errors_total{method="create",reason="TARGET:INVALID"}' in text
    assert 'odoo_upgrade_bytes_moved_total{direction="upload"} 1024.0' in text
    assert 'odoo_upgrade_step_duration_seconds_count{step="poll"}' in text
    assert "odoo_upgrade_event_loop_lag_seconds_bucket" in text
    metrics.record_phase("uid-a", None)
    metrics.record_phase("uid-b", None)


async def test_a_busy_event_loop_shows_as_lag() -> None:
    """A callback holding the loop for 0.3 s: the sampler's next wake-up is that late."""

    def count_and_sum() -> tuple[float, float]:
        name = "odoo_upgrade_event_loop_lag_seconds"
        count = metrics.REGISTRY.get_sample_value(f"{name}_count") or 0.0
        return count, metrics.REGISTRY.get_sample_value(f"{name}_sum") or 0.0

    before = count_and_sum()
    sampler = asyncio.create_task(sample_loop_lag(every=0.05))
    await asyncio.sleep(0.12)
    asyncio.get_running_loop().call_soon(time.sleep, 0.3)  # a handler that does not await
    await asyncio.sleep(0.5)
    sampler.cancel()
    after = count_and_sum()
    assert after[0] - before[0] >= 3
    assert after[1] - before[1] >= 0.2
