"""Samples how late the operator's event loop runs what is due, as a metric
(`odoo_upgrade_event_loop_lag_seconds`).

Why: every resource's flow, its polls and the Job handlers share one thread. When it is busy
(kopf parsing watch events of hundreds of resources, on CPU shared with other processes), a
poll due now starts late and the platform is asked less often than `pollInterval` says; the
metric shows that load before users notice it.
"""

from __future__ import annotations

import asyncio
from typing import Final

from odoo_upgrade.controller import metrics

SAMPLE_EVERY: Final = 1.0


async def sample_loop_lag(every: float = SAMPLE_EVERY) -> None:
    """Sleep `every` seconds, record how much later than asked the loop woke; until cancelled."""
    loop = asyncio.get_running_loop()
    while True:
        due = loop.time() + every
        await asyncio.sleep(every)
        metrics.EVENT_LOOP_LAG.observe(max(0.0, loop.time() - due))
