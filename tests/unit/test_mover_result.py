"""The mover's result as the kubelet keeps it (at most 4 KiB) and its choice of transport."""

from __future__ import annotations

import json
from pathlib import Path

from odoo_upgrade.mover import RequestFiles, choose_transport, write_termination_message


def test_a_long_failure_is_cut_to_fit_the_termination_message(tmp_path: Path) -> None:
    log = tmp_path / "termination-log"
    failures = [{"reason": "X", "message": "m" * 500} for _ in range(20)]
    write_termination_message(
        log, {"error": "e" * 10_000, "reason": "PlatformFailure", "failures": failures}
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
        log, {"error": f"GET /database/eu1/10534/{key}/upgraded/archive failed", "reason": "R"}
    )
    assert key not in log.read_text()


def test_auto_picks_sftp_only_above_the_threshold_and_with_access(tmp_path: Path) -> None:
    without_access = RequestFiles(1, "k" * 10, tmp_path)
    assert choose_transport("auto", 10_000, 1_000, without_access) == "https"
    (tmp_path / "sftp-access").write_text("{}")
    with_access = RequestFiles(1, "k" * 10, tmp_path)
    assert choose_transport("auto", 10_000, 1_000, with_access) == "sftp"
    assert choose_transport("auto", 1_000, 1_000, with_access) == "https"
    assert choose_transport("https", 10_000, 1_000, with_access) == "https"
    assert choose_transport("sftp", 1, 1_000, without_access) == "sftp"
