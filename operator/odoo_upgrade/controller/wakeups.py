"""Wakes a resource's flow when one of its mover Jobs changes, instead of polling the Job.

kopf watches the operator's mover Jobs (one watch for all of them); each change wakes the
daemon of the `OdooUpgrade` named in the Job's labels, which then reads the Job at once. The
flow still looks on its own now and then (progress, a stuck pod), only less often.
"""

from __future__ import annotations

import asyncio


class Wakeups:
    """One asyncio.Event per resource uid, set when something the flow waits for changed."""

    def __init__(self) -> None:
        self._events: dict[str, asyncio.Event] = {}

    def event_for(self, uid: str) -> asyncio.Event:
        return self._events.setdefault(uid, asyncio.Event())

    def wake(self, uid: str) -> None:
        event = self._events.get(uid)
        if event is not None:
            event.set()

    def forget(self, uid: str) -> None:
        self._events.pop(uid, None)


async def sleep_or_wake(seconds: float, wake: asyncio.Event | None) -> None:
    """Sleep `seconds`, or less if `wake` is set meanwhile (then clear it)."""
    if wake is None:
        await asyncio.sleep(seconds)
        return
    try:
        await asyncio.wait_for(wake.wait(), timeout=seconds)
    except TimeoutError:
        return
    wake.clear()
