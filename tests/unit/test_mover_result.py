"""The mover's result as the kubelet keeps it (at most 4 KiB) and its choice of transport."""

from __future__ import annotations

import json
from pathlib import Path

from odoo_upgrade.mover import write_termination_message
from odoo_upgrade.request.mover_result import MoverResult
from odoo_upgrade.request.transport import choose_transport


def test_a_long_failure_is_cut_to_fit_the_termination_message(tmp_path: Path) -> None:
    log = tmp_path / "termination-log"
    failures = [{"reason": "X", "message": "m" * 500} for _ in range(20)]
    write_termination_message(
        log,
        MoverResult.failure("PlatformFailure", "e" * 10_000, transient=False, failures=failures),
    )
    text = log.read_text()
    assert len(text.encode()) < 4096
    result = json.loads(text)
    assert result["reason"] == "PlatformFailure"
    assert result["error"].startswith("eee")


def test_the_key_is_masked_in_the_termination_message(tmp_path: Path) -> None:
    log = tmp_path / "termination-log"
    key = "Aw7pItGVKFuZ_FOR3U8VFQ=="
    write_termination_message(
        log,
        MoverResult.failure(
            "R", f"GET /database/eu1/10534/{key}/upgraded/archive failed", transient=True
        ),
    )
    assert key not in log.read_text()


def test_auto_picks_sftp_only_above_the_threshold_and_with_access() -> None:
    assert choose_transport("auto", 10_000, 1_000, sftp_available=False) == "https"
    assert choose_transport("auto", 10_000, 1_000, sftp_available=True) == "sftp"
    assert choose_transport("auto", 1_000, 1_000, sftp_available=True) == "https"
    assert choose_transport("https", 10_000, 1_000, sftp_available=True) == "https"
    assert choose_transport("sftp", 1, 1_000, sftp_available=False) == "sftp"
