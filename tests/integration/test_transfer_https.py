"""HTTPS upload and download against the emulator on loopback, with dropped connections."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import pytest

from odoo_upgrade.platform import PlatformFailure, PlatformUnavailable, RetryPolicy
from odoo_upgrade.transfer import (
    DestinationExists,
    TransferError,
    TransferUnavailable,
    download_https,
    upload_https,
)
from odoo_upgrade.transfer.part_file import part_path
from tests.support.emulator import RunningEmulator, write_sample_dump

FAST = RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.05)
DUMP_SIZE = 256 * 1024
DROP_AFTER = 100_000


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def upgraded_request(emulator: RunningEmulator, tmp_path: Path) -> dict[str, object]:
    """A request in `done` (uploaded with retries: `--drop-after-bytes` cuts uploads too)."""
    request = emulator.create_request()
    dump = write_sample_dump(tmp_path / "source.dump", size=DUMP_SIZE)
    await upload_https(emulator.url, request["id"], request["key"], dump, retry=FAST)
    assert not emulator.api("process", request=request["id"], key=request["key"])["failures"]
    return emulator.wait_for_state(request["id"], request["key"], "done")


async def test_upload_streams_the_file_and_reports_its_sha256(
    emulator: RunningEmulator, tmp_path: Path
) -> None:
    request = emulator.create_request()
    dump = write_sample_dump(tmp_path / "db.dump", size=DUMP_SIZE)
    seen: list[tuple[int, int | None]] = []
    result = await upload_https(
        emulator.url, request["id"], request["key"], dump, progress=lambda d, t: seen.append((d, t))
    )
    assert emulator.original_path(request["id"]).read_bytes() == dump.read_bytes()
    assert (result.bytes, result.sha256, result.attempts) == (
        dump.stat().st_size,
        sha256(dump.read_bytes()),
        1,
    )
    assert seen[-1] == (dump.stat().st_size, dump.stat().st_size)


async def test_upload_cut_mid_body_is_sent_again_whole(
    make_emulator: Callable[..., RunningEmulator], tmp_path: Path
) -> None:
    emulator = make_emulator(drop_after_bytes=DROP_AFTER)
    request = emulator.create_request()
    dump = write_sample_dump(tmp_path / "db.dump", size=DUMP_SIZE)
    result = await upload_https(emulator.url, request["id"], request["key"], dump, retry=FAST)
    assert result.attempts == 2
    assert result.sha256 == sha256(dump.read_bytes())
    assert emulator.original_path(request["id"]).read_bytes() == dump.read_bytes()


async def test_upload_refused_by_the_platform_is_permanent(
    emulator: RunningEmulator, tmp_path: Path
) -> None:
    request = emulator.create_request()
    dump = write_sample_dump(tmp_path / "db.dump", size=16 * 1024)
    with pytest.raises(PlatformFailure) as caught:
        await upload_https(emulator.url, request["id"], "WrongKey-0000==", dump, retry=FAST)
    assert not caught.value.transient
    assert len(emulator.calls("upload")) == 1


async def test_upload_to_a_failing_platform_gives_up_after_the_attempts(
    make_emulator: Callable[..., RunningEmulator], tmp_path: Path
) -> None:
    emulator = make_emulator(fail_rate=1.0)
    dump = write_sample_dump(tmp_path / "db.dump", size=16 * 1024)
    with pytest.raises(PlatformUnavailable):
        await upload_https(emulator.url, 10534, "Aw7pItGVKFuZ_FOR3U8VFQ==", dump, retry=FAST)
    assert len(emulator.calls("upload")) == FAST.attempts


async def test_download_resumes_after_a_cut_and_matches_the_upgraded_file(
    make_emulator: Callable[..., RunningEmulator], tmp_path: Path
) -> None:
    emulator = make_emulator(process_seconds=0, drop_after_bytes=DROP_AFTER)
    request = await upgraded_request(emulator, tmp_path)
    expected = emulator.upgraded_bytes(int(request["id"]))
    assert len(expected) > DROP_AFTER  # the cut happens mid-file
    dest = tmp_path / "out" / "upgraded.zip"
    dest.parent.mkdir()
    seen: list[int] = []
    result = await download_https(
        str(request["upgraded_dump_url"]),
        dest,
        retry=FAST,
        progress=lambda done, total: seen.append(done),
    )
    assert result.attempts == 2
    assert dest.read_bytes() == expected
    assert result.sha256 == sha256(expected)
    assert (tmp_path / "out" / "upgraded.zip.sha256").read_text() == (
        f"{sha256(expected)}  upgraded.zip\n"
    )
    assert sorted(p.name for p in dest.parent.iterdir()) == ["upgraded.zip", "upgraded.zip.sha256"]
    assert seen == sorted(seen) and seen[-1] == len(expected)


async def test_download_rerun_resumes_the_part_left_by_a_crash(
    make_emulator: Callable[..., RunningEmulator], tmp_path: Path
) -> None:
    emulator = make_emulator(process_seconds=0)
    request = await upgraded_request(emulator, tmp_path)
    expected = emulator.upgraded_bytes(int(request["id"]))
    dest = tmp_path / "upgraded.zip"
    kept = len(expected) // 3
    part_path(dest).write_bytes(expected[:kept])
    result = await download_https(str(request["upgraded_dump_url"]), dest, retry=FAST)
    assert dest.read_bytes() == expected
    assert result.sha256 == sha256(expected)
    assert not part_path(dest).exists()


async def test_download_rerun_asks_only_for_the_missing_range(
    make_emulator: Callable[..., RunningEmulator], tmp_path: Path
) -> None:
    emulator = make_emulator(process_seconds=0)
    request = await upgraded_request(emulator, tmp_path)
    expected = emulator.upgraded_bytes(int(request["id"]))
    dest = tmp_path / "upgraded.zip"
    # A marked prefix shows that the part was continued, not fetched again from byte 0.
    part_path(dest).write_bytes(b"Z" * 1000)
    result = await download_https(str(request["upgraded_dump_url"]), dest, retry=FAST)
    assert dest.read_bytes() == b"Z" * 1000 + expected[1000:]
    assert result.sha256 == sha256(dest.read_bytes())  # the hash covers the resumed prefix


async def test_download_rerun_after_a_crash_before_rename_publishes_the_complete_part(
    make_emulator: Callable[..., RunningEmulator], tmp_path: Path
) -> None:
    emulator = make_emulator(process_seconds=0)
    request = await upgraded_request(emulator, tmp_path)
    size = len(emulator.upgraded_bytes(int(request["id"])))
    dest = tmp_path / "upgraded.zip"
    # Whole, but marked: the server answers 416 to the range past its end, nothing is fetched.
    part_path(dest).write_bytes(b"Z" * size)
    result = await download_https(str(request["upgraded_dump_url"]), dest, retry=FAST)
    assert dest.read_bytes() == b"Z" * size
    assert (result.bytes, result.sha256) == (size, sha256(b"Z" * size))


async def test_download_restarts_cleanly_when_the_part_is_longer_than_the_file(
    make_emulator: Callable[..., RunningEmulator], tmp_path: Path
) -> None:
    emulator = make_emulator(process_seconds=0)
    request = await upgraded_request(emulator, tmp_path)
    expected = emulator.upgraded_bytes(int(request["id"]))
    dest = tmp_path / "upgraded.zip"
    part_path(dest).write_bytes(b"x" * (len(expected) + 10))
    result = await download_https(str(request["upgraded_dump_url"]), dest, retry=FAST)
    assert dest.read_bytes() == expected
    assert result.sha256 == sha256(expected)


async def test_download_never_overwrites_an_existing_destination(
    make_emulator: Callable[..., RunningEmulator], tmp_path: Path
) -> None:
    emulator = make_emulator(process_seconds=0)
    request = await upgraded_request(emulator, tmp_path)
    dest = tmp_path / "upgraded.zip"
    dest.write_bytes(b"precious earlier result")
    with pytest.raises(DestinationExists):
        await download_https(str(request["upgraded_dump_url"]), dest, retry=FAST)
    assert dest.read_bytes() == b"precious earlier result"
    assert not part_path(dest).exists()
    assert not (tmp_path / "upgraded.zip.sha256").exists()


async def test_download_with_a_wrong_key_is_refused_and_leaves_no_final_file(
    make_emulator: Callable[..., RunningEmulator], tmp_path: Path
) -> None:
    emulator = make_emulator(process_seconds=0)
    request = await upgraded_request(emulator, tmp_path)
    url = str(request["upgraded_dump_url"]).replace(str(request["key"]), "WrongKey-0000==")
    dest = tmp_path / "upgraded.zip"
    with pytest.raises((TransferError, PlatformFailure)) as caught:
        await download_https(url, dest, retry=FAST)
    assert not caught.value.transient
    assert not dest.exists()
    assert "WrongKey-0000==" not in str(caught.value)


async def test_download_size_check_against_the_expected_size(
    make_emulator: Callable[..., RunningEmulator], tmp_path: Path
) -> None:
    emulator = make_emulator(process_seconds=0)
    request = await upgraded_request(emulator, tmp_path)
    dest = tmp_path / "upgraded.zip"
    with pytest.raises(TransferError, match="expected 7"):
        await download_https(str(request["upgraded_dump_url"]), dest, retry=FAST, expected_size=7)
    assert list(p for p in tmp_path.iterdir() if p.name.startswith("upgraded")) == []


async def test_download_from_a_stopped_platform_gives_up_keeping_the_part(
    make_emulator: Callable[..., RunningEmulator], tmp_path: Path
) -> None:
    emulator = make_emulator(process_seconds=0)
    request = await upgraded_request(emulator, tmp_path)
    emulator.stop()
    dest = tmp_path / "upgraded.zip"
    with pytest.raises(TransferUnavailable, match="without progress"):
        await download_https(str(request["upgraded_dump_url"]), dest, retry=FAST)
    assert not dest.exists()
