"""What must hold after every fault run: nothing lost, nothing doubled, nothing half-written.

For every resource of the run:
- it ended `Succeeded`;
- the platform saw exactly one successful `create` for it (and no request nobody owns);
- the upgraded dump on the destination volume equals the platform's, byte for byte, with a
  `.sha256` beside it in `sha256sum` format (upgrade-request: the destination directory holds
  the platform's whole upgraded set and a SHA256SUMS that `sha256sum -c` accepts);
- no other file is left in the destination directory: no `.part` (nor its `.part.json`
  origin), no temp file under a final name, no second copy. The one hidden file allowed is
  the `.<name>.receipt.json` a download leaves by design (what it published, for the
  attempt after a crash; transfer/binding.py).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.emulator import RunningEmulator
from tests.support.scenario import Upgrade, assert_set_delivered, describe, phase_of

UPGRADE_REQUEST = "upgrade-request"


@dataclass(frozen=True)
class Delivery:
    """One resource of a run and where its upgraded dump must land."""

    upgrade: Upgrade
    volume: Path
    destination_path: str
    api: str = "database-v1"


def expected_files(deliveries: Sequence[Delivery]) -> dict[Path, set[str]]:
    """Per destination directory, the only file names allowed to be in it."""
    allowed: dict[Path, set[str]] = {}
    for delivery in deliveries:
        final = delivery.volume / delivery.destination_path
        receipt = f".{final.name}.receipt.json"
        names = (
            {final.name, receipt}
            if delivery.api == UPGRADE_REQUEST
            else {final.name, final.name + ".sha256", receipt}
        )
        allowed.setdefault(final.parent, set()).update(names)
    return allowed


def stored_requests(emulator: RunningEmulator) -> list[int]:
    """Every request the platform holds, on both APIs."""
    found = []
    for directory in ("requests", "upgrade-requests"):
        root = emulator.data_dir / directory
        if root.is_dir():
            found += [int(p.name) for p in root.iterdir() if p.name.isdigit()]
    return sorted(found)


def assert_nothing_lost(emulator: RunningEmulator, deliveries: Sequence[Delivery]) -> int:
    """Check every invariant of the module docstring; return the upgraded bytes compared."""
    objects: list[dict[str, Any]] = [d.upgrade.get() for d in deliveries]
    not_done = [
        f"{d.upgrade.name}: {phase_of(obj)}\n{describe(obj)}"
        for d, obj in zip(deliveries, objects, strict=True)
        if phase_of(obj) != "Succeeded"
    ]
    assert not not_done, "resources not Succeeded:\n" + "\n".join(not_done)

    request_ids = [int(obj["status"]["requestId"]) for obj in objects]
    assert len(set(request_ids)) == len(request_ids), (
        f"two resources share a request: {request_ids}"
    )
    creates = [
        call
        for method in ("create", "upgrade/request/create")
        for call in emulator.calls(method)
        if call.get("ok")
    ]
    assert len(creates) == len(deliveries), (
        f"{len(creates)} successful creates for {len(deliveries)} resources"
    )
    stored = stored_requests(emulator)
    assert stored == sorted(request_ids), f"platform requests {stored} vs resources' {request_ids}"

    compared = 0
    for delivery, request_id, obj in zip(deliveries, request_ids, objects, strict=True):
        if delivery.api == UPGRADE_REQUEST:
            served = emulator.request_data(request_id)
            compared += assert_set_delivered(
                obj, delivery.volume, delivery.destination_path, served
            )
            continue
        upgraded = emulator.upgraded_bytes(request_id)
        final = delivery.volume / delivery.destination_path
        assert final.is_file(), f"{delivery.upgrade.name}: {delivery.destination_path} missing"
        written = final.read_bytes()
        assert len(written) == len(upgraded), (
            f"{delivery.upgrade.name}: {len(written)} bytes on the volume, platform has "
            f"{len(upgraded)}"
        )
        assert written == upgraded, f"{delivery.upgrade.name}: bytes differ from the platform's"
        checksum = final.with_name(final.name + ".sha256").read_text()
        assert checksum == f"{hashlib.sha256(upgraded).hexdigest()}  {final.name}\n"
        compared += len(upgraded)

    for directory, allowed in expected_files(deliveries).items():
        leftovers = sorted(p.name for p in directory.iterdir() if p.name not in allowed)
        assert not leftovers, f"files left in {directory}: {leftovers}"
    return compared


def emulator_faults(emulator: RunningEmulator) -> dict[str, int]:
    """What the emulator actually did wrong during a run, from its own records."""
    calls = emulator.calls()
    latency = float(emulator.flags.get("latency") or 0)
    faults = {
        "platform answered SERVER:ERROR": sum(
            "SERVER:ERROR" in c.get("reasons", []) for c in calls
        ),
        "transfer connection cut mid-way": emulator.log().count("cut after"),
    }
    if latency:
        faults[f"slow platform answer ({latency:g} s)"] = len(calls)
    return {kind: count for kind, count in faults.items() if count}
