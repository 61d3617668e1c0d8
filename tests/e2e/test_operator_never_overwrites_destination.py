"""A file already at the destination path is never overwritten: the upgrade does not claim
success and the file keeps its bytes."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.support.emulator import RunningEmulator
from tests.support.scenario import Namespace, condition, conditions_of, describe, phase_of

pytestmark = pytest.mark.e2e
pytest_plugins = ["tests.support.operator_fixtures"]

DESTINATION = "upgraded/acme-18.dump"
PRECIOUS = b"yesterday's upgraded dump, which someone still needs\n"


def refused_to_overwrite(obj: dict[str, Any]) -> bool:
    """The operator said so: Failed, or a condition telling that the destination exists."""
    said = any("exist" in str(c.get("message", "")).lower() for c in conditions_of(obj))
    return phase_of(obj) in ("Failed", "Succeeded") or said


def test_existing_destination_file_is_kept_and_reported(
    namespaces: Callable[[], Namespace],
    start_emulator: Callable[..., RunningEmulator],
) -> None:
    emulator = start_emulator()
    ns = namespaces()
    ns.prepare()
    ns.put_dump("dumps/acme.dump")
    destination = ns.volume() / DESTINATION
    destination.parent.mkdir(parents=True, exist_ok=True)
    destination.write_bytes(PRECIOUS)
    upgrade = ns.apply_upgrade(
        "acme-to-18",
        platform_url=emulator.url,
        source_path="dumps/acme.dump",
        destination_path=DESTINATION,
    )

    obj = upgrade.wait_until(refused_to_overwrite, "a refusal to overwrite the destination")
    time.sleep(3)  # a few poll intervals: a retry would overwrite now if it ever did
    obj = upgrade.get()

    assert phase_of(obj) != "Succeeded", describe(obj)
    downloaded = condition(obj, "Downloaded")
    assert downloaded is None or downloaded["status"] != "True", describe(obj)
    assert any(DESTINATION in str(c.get("message", "")) for c in conditions_of(obj)), describe(obj)
    assert destination.read_bytes() == PRECIOUS
    assert not destination.with_name(destination.name + ".sha256").exists()
    assert len(emulator.calls("create")) <= 1  # whether or not it checks before creating
