"""Transfer progress as people see it: a bar on a terminal, sparse lines in CI logs."""

from __future__ import annotations

import io

from odoo_upgrade.progress import TransferProgress, format_duration
from odoo_upgrade.request.progress import format_bytes


def test_log_output_prints_one_line_per_ten_percent() -> None:
    stream = io.StringIO()
    progress = TransferProgress("upload", stream=stream, interactive=False)
    total = 1000
    for done in range(0, total + 1, 5):
        progress(done, total)
    progress.finish()
    lines = stream.getvalue().splitlines()
    assert [line.split(":")[1].split("%")[0].strip() for line in lines] == [
        str(p) for p in range(0, 101, 10)
    ]
    assert "\r" not in stream.getvalue()


def test_log_output_with_unknown_total_still_reports_the_end() -> None:
    stream = io.StringIO()
    progress = TransferProgress("download", stream=stream, interactive=False)
    progress(4096, None)
    progress.finish()
    assert stream.getvalue().splitlines()[-1].startswith("download: 4.0 KiB")


def test_terminal_output_redraws_one_line_and_ends_it() -> None:
    stream = io.StringIO()
    progress = TransferProgress("upload", stream=stream, interactive=True)
    progress(512, 1024)
    progress(1024, 1024)
    progress.finish()
    text = stream.getvalue()
    assert text.count("\n") == 1
    assert text.endswith("\n")
    assert "100.0%" in text


def test_disabled_progress_prints_nothing() -> None:
    stream = io.StringIO()
    progress = TransferProgress("upload", stream=stream, enabled=False, interactive=False)
    progress(10, 10)
    progress.finish()
    assert stream.getvalue() == ""


def test_sizes_and_durations_read_naturally() -> None:
    assert format_bytes(512) == "512 B"
    assert format_bytes(3 * 1024 * 1024) == "3.0 MiB"
    assert format_bytes(5 * 1024**4) == "5120.0 GiB"
    assert format_duration(3725) == "1:02:05"


def test_a_resumed_transfer_does_not_count_old_bytes_in_its_rate() -> None:
    stream = io.StringIO()
    progress = TransferProgress("upload", stream=stream, interactive=False)
    progress(900 * 1024 * 1024, 1000 * 1024 * 1024)  # 90% already on the server
    progress.finish()
    assert stream.getvalue().splitlines()[-1].endswith(", 0.0 MiB/s)")
