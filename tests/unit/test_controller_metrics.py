"""The operator's /metrics: resources by phase, platform calls and errors, bytes moved and step
durations, served over HTTP from the operator's own registry."""

from __future__ import annotations

import urllib.request

from odoo_upgrade.controller import metrics
from tests.harness.ports import free_port


def test_metrics_endpoint_serves_the_operators_series() -> None:
    metrics.record_phase("uid-a", "Uploading")
    metrics.record_phase("uid-b", "Uploading")
    metrics.record_phase("uid-b", "Processing")
    metrics.PLATFORM_CALLS.labels(method="create").inc()
    metrics.PLATFORM_ERRORS.labels(method="create", reason="TARGET:INVALID").inc()
    metrics.BYTES_MOVED.labels(direction="upload").inc(1024)
    metrics.STEP_DURATION.labels(step="poll").observe(0.2)
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
    metrics.record_phase("uid-a", None)
    metrics.record_phase("uid-b", None)
