"""What the operator shows about a request: the platform's state without its key or URLs,
human progress, and Events that never carry a secret."""

from __future__ import annotations

from typing import Any

from odoo_upgrade.controller.kube import KubeApi
from odoo_upgrade.controller.resource import Upgrade
from odoo_upgrade.controller.status import platform_status
from odoo_upgrade.platform import UpgradeRequest
from odoo_upgrade.platform.v1 import PUBLIC_KEYS, public_status
from odoo_upgrade.redact import register_secret
from odoo_upgrade.request.progress import ProgressLine, parse_progress_line, progress_text

KEY = "Aw7pItGVKFuZ_FOR3U8VFQ=="
ANSWER: dict[str, Any] = {
    "id": 10534,
    "key": KEY,
    "state": "testing",
    "issue_stage": "new",
    "status_url": f"https://upgrade.odoo.com/database/eu1/10534/{KEY}/status",
    "upgraded_dump_url": f"https://upgrade.odoo.com/database/eu1/10534/{KEY}/upgraded/archive",
    "filesize": "912.99 Kb",
    "database_version": "17.0",
    "compressions": ["pgdmp_custom"],
    "customer_message": None,
}


def test_platform_status_mirrors_the_state_without_key_or_urls() -> None:
    mirrored = platform_status(
        public_status(UpgradeRequest.from_json(ANSWER)), "2026-01-01T00:00:00Z"
    )
    assert mirrored["state"] == "testing"
    assert mirrored["issueStage"] == "new"
    assert mirrored["filesize"] == "912.99 Kb"
    assert mirrored["compressions"] == ["pgdmp_custom"]
    assert mirrored["lastCheckTime"] == "2026-01-01T00:00:00Z"
    assert KEY not in repr(mirrored) and "http" not in repr(mirrored)


def test_fields_the_platform_stopped_sending_are_removed_by_the_merge_patch() -> None:
    mirrored = platform_status(public_status(UpgradeRequest.from_json(ANSWER)), "t")
    assert set(mirrored) == {*PUBLIC_KEYS, "lastCheckTime"}
    assert mirrored["customerMessage"] is None  # null in a merge patch deletes the field


def test_progress_reads_the_movers_last_line_and_reads_well() -> None:
    log = "upload: 0/300 bytes (0%)\nupload: 150/300 bytes (50%)\n"
    assert parse_progress_line(log) == ProgressLine("upload", 150, 300)
    assert parse_progress_line("nothing yet") is None
    assert progress_text(3 * 1024**3 // 2, 3 * 1024**3) == "50% (1.5 GiB/3.0 GiB)"
    assert progress_text(2048, None) == "2.0 KiB"


async def test_events_are_redacted_before_they_are_posted() -> None:
    posted: list[tuple[str, str, str]] = []
    kube = KubeApi()
    upgrade = Upgrade(kube, "odoo", "acme", "uid", lambda t, r, m: posted.append((t, r, m)))
    register_secret(KEY)
    upgrade.event(
        "Warning", "PlatformUnavailable", f"status failed for /database/eu1/10534/{KEY}/status"
    )
    upgrade.event("Normal", "Uploaded", f"request key={KEY}")
    assert posted and all(KEY not in message for _, _, message in posted)
    assert "***" in posted[0][2]
    await kube.close()
