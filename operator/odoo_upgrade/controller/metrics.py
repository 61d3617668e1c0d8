"""Prometheus metrics of the operator, in a registry of their own (no process-global state).

Labels carry only non-secret, low-cardinality values: phases, method names, failure reasons,
directions, step names. Never a request id, key or URL.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from odoo_upgrade.controller.conditions import PHASES

REGISTRY = CollectorRegistry(auto_describe=True)

RESOURCES_BY_PHASE = Gauge(
    "odoo_upgrade_resources",
    "OdooUpgrade resources seen by this operator, by phase.",
    ["phase"],
    registry=REGISTRY,
)
PLATFORM_CALLS = Counter(
    "odoo_upgrade_platform_calls",
    "Calls made to the Upgrade Platform, by method.",
    ["method"],
    registry=REGISTRY,
)
PLATFORM_ERRORS = Counter(
    "odoo_upgrade_platform_errors",
    "Upgrade Platform calls that failed, by method and reason.",
    ["method", "reason"],
    registry=REGISTRY,
)
BYTES_MOVED = Counter(
    "odoo_upgrade_bytes_moved",
    "Bytes of dumps moved by finished mover Jobs, by direction (upload, download).",
    ["direction"],
    registry=REGISTRY,
)
STEP_DURATION = Histogram(
    "odoo_upgrade_step_duration_seconds",
    "Time spent in one pass of a flow step (platform and API calls included).",
    ["step"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
    registry=REGISTRY,
)
EVENT_LOOP_LAG = Histogram(
    "odoo_upgrade_event_loop_lag_seconds",
    "How late the operator's event loop woke a timer, sampled every second. Every poll and "
    "Job handler waits on that loop: lag of seconds means polls start that late (the "
    "operator needs more CPU, or has too many resources).",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
    registry=REGISTRY,
)

# Reasons a platform error may be counted under; anything else (platform text, a new
# reason) is `other`, so that no peer can grow the metric's label set.
KNOWN_ERROR_REASONS = frozenset(
    {
        "TARGET:INVALID",
        "CONTRACT:NOT_FOUND",
        "SERVER:ERROR",
        "REQUEST:NOT_FOUND",
        "STATE:INVALID",
        "REQUEST:ERROR",  # upgrade/request: `result.error`
        "JSONRPC:ERROR",  # upgrade/request: a JSON-RPC `error` object
        "PlatformNotReached",
        "PlatformServerError",
        "PlatformUnavailable",
        "PlatformOutcomeUnknown",
        "PlatformProtocolError",
    }
)


def count_platform_error(method: str, reason: str) -> None:
    """Count a failed platform call under a reason from a closed set."""
    label = reason if reason in KNOWN_ERROR_REASONS else "other"
    PLATFORM_ERRORS.labels(method=method, reason=label).inc()


# Phase of every resource this operator knows, by uid; the gauge is derived from it.
_phases: dict[str, str] = {}


def record_phase(uid: str, phase: str | None) -> None:
    """Remember a resource's phase (None: forget it) and refresh the phase gauge."""
    if phase is None:
        _phases.pop(uid, None)
    else:
        _phases[uid] = phase
    for known in PHASES:
        RESOURCES_BY_PHASE.labels(phase=known).set(sum(1 for p in _phases.values() if p == known))


def serve(port: int, address: str = "0.0.0.0") -> None:
    """Serve `/metrics` on `port` in a background thread (0: do not serve)."""
    if port:
        start_http_server(port, addr=address, registry=REGISTRY)


for _phase in PHASES:
    RESOURCES_BY_PHASE.labels(phase=_phase).set(0)
