"""Upload progress, over HTTPS and over SFTP, shows where users look: the PROGRESS column of
`kubectl get odooupgrades` moves through percentages while the mover sends, and
`kubectl logs job/<name>-upload` shows the mover's own progress lines.

The operator reads the mover's last progress line from the pod's log (the mover has no API
access); on the local cluster the pod runner serves pod logs as a kubelet does. The emulator
receives at 1 MiB/s, so an upload lasts several of the operator's looks.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

import pytest

from tests.support.emulator import RunningEmulator
from tests.support.operator import RunningOperator
from tests.support.scenario import RESOURCE, Namespace, describe, phase_of

pytestmark = pytest.mark.e2e
pytest_plugins = ["tests.support.operator_fixtures"]

DUMP_BYTES = 14 * 1024 * 1024
PERCENT = re.compile(r"^(\d+)% \(")


@pytest.mark.parametrize("transport", ["https", "sftp"])
def test_upload_progress_shows_in_kubectl_get_and_kubectl_logs(
    transport: str,
    live_operator: RunningOperator,
    namespaces: Callable[[], Namespace],
    start_emulator: Callable[..., RunningEmulator],
) -> None:
    emulator = start_emulator(bandwidth=1024 * 1024)
    ns = namespaces()
    ns.prepare(contract=emulator.contract)
    ns.put_dump("dumps/acme.dump", size=DUMP_BYTES)
    name = f"progress-{transport}"
    upgrade = ns.apply_upgrade(
        name,
        platform_url=emulator.url,
        source_path="dumps/acme.dump",
        destination_path="upgraded/acme-18.dump",
        transport=transport,
    )
    shown: list[int] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        column = ns.kube.run(
            "get", RESOURCE, name, "-n", ns.name, "-o", "custom-columns=P:.status.progress",
            "--no-headers",
        ).strip()  # fmt: skip
        match = PERCENT.match(column)
        if match:
            shown.append(int(match.group(1)))
        if phase_of(upgrade.get()) not in (None, "Pending", "Creating", "Uploading"):
            break
        time.sleep(0.5)
    assert any(0 < percent < 100 for percent in shown), f"progress never shown: {shown}"
    assert shown == sorted(shown), f"progress went backwards: {shown}"
    logs = ns.kube.run("logs", f"job/{name}-upload", "-n", ns.name)
    assert re.search(rf"^upload: \d+/{DUMP_BYTES} bytes \(\d+%\)$", logs, re.M), logs
    obj = upgrade.wait_for_phase("Succeeded", "Failed", timeout=180)
    assert phase_of(obj) == "Succeeded", describe(obj)
    assert obj["status"]["upload"]["bytesDone"] == DUMP_BYTES
