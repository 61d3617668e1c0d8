"""A `.part` is resumed only by the request and remote file it belongs to; a destination this
request published is recognised after a crash; nothing written by anyone else is replaced."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from odoo_upgrade.transfer import (
    DestinationExists,
    DownloadBinding,
    TransferResult,
    published_download,
)
from odoo_upgrade.transfer.binding import PartOrigin, origin_path, receipt_path, source_digest
from odoo_upgrade.transfer.part_file import PartFile, checksum_path, part_path

URL = "https://upgrade.example/database/eu1/7/Aw7pItGVKFuZ_FOR3U8VFQ==/upgraded/archive"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def origin(request_id: str = "7", source: str = URL, validator: str = '"v1"') -> PartOrigin:
    return PartOrigin(
        request_id=request_id, source_sha256=source_digest(source), size=11, validator=validator
    )


def bound_part_left_by_a_crash(dest: Path, data: bytes, left: PartOrigin) -> None:
    """What an interrupted bound download leaves: bytes in the part, their origin beside."""
    part = PartFile.open(dest, binding=DownloadBinding("7"), source=URL)
    part.set_origin(left)
    part.append(data)
    part.close()


def publish(dest: Path, data: bytes, request_id: str = "7", attempts: int = 1) -> str:
    part = PartFile.open(dest, binding=DownloadBinding(request_id), source=URL)
    part.set_origin(origin(request_id))
    part.append(data)
    return part.finish(len(data), attempts=attempts)


def test_the_origin_never_holds_the_url_only_its_digest(tmp_path: Path) -> None:
    dest = tmp_path / "acme.dump"
    bound_part_left_by_a_crash(dest, b"hello", origin())
    text = origin_path(dest).read_text()
    assert origin_path(dest) == tmp_path / ".acme.dump.part.json"
    assert "Aw7pItGVKFuZ_FOR3U8VFQ==" not in text and "upgrade.example" not in text
    assert json.loads(text)["source_sha256"] == sha256(URL.encode())


def test_a_part_without_an_origin_is_discarded(tmp_path: Path) -> None:
    dest = tmp_path / "acme.dump"
    part_path(dest).write_bytes(b"someone else's bytes")
    part = PartFile.open(dest, binding=DownloadBinding("7"), source=URL)
    assert part.size == 0 and part.origin is None
    part.close()


@pytest.mark.parametrize(
    "left",
    [
        origin(request_id="8"),
        origin(source=URL.replace("/7/", "/8/")),
        origin(validator=""),  # the server gave nothing to send in If-Range
    ],
    ids=["another-request", "another-url", "no-validator"],
)
def test_a_part_of_another_request_or_file_is_discarded(tmp_path: Path, left: PartOrigin) -> None:
    dest = tmp_path / "acme.dump"
    bound_part_left_by_a_crash(dest, b"hello", left)
    part = PartFile.open(dest, binding=DownloadBinding("7"), source=URL)
    assert part.size == 0 and part.origin is None
    assert not origin_path(dest).exists()
    part.close()


def test_a_part_of_the_same_request_and_url_is_kept_with_its_origin(tmp_path: Path) -> None:
    dest = tmp_path / "acme.dump"
    bound_part_left_by_a_crash(dest, b"hello", origin())
    part = PartFile.open(dest, binding=DownloadBinding("7"), source=URL)
    assert part.size == 5 and part.origin == origin()
    part.append(b" world")
    assert part.finish(11) == sha256(b"hello world")


def test_restarting_a_bound_part_forgets_its_origin(tmp_path: Path) -> None:
    dest = tmp_path / "acme.dump"
    bound_part_left_by_a_crash(dest, b"hello", origin())
    part = PartFile.open(dest, binding=DownloadBinding("7"), source=URL)
    part.restart()
    assert part.origin is None and not origin_path(dest).exists()
    part.close()


def test_an_unbound_download_keeps_todays_resume_of_any_part(tmp_path: Path) -> None:
    dest = tmp_path / "acme.dump"
    part_path(dest).write_bytes(b"left by a crashed run")
    part = PartFile.open(dest)
    assert part.size == len(b"left by a crashed run")
    part.close()


def test_publishing_leaves_the_file_its_checksum_and_a_receipt_only(tmp_path: Path) -> None:
    dest = tmp_path / "acme.dump"
    publish(dest, b"hello world", attempts=3)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".acme.dump.receipt.json",
        "acme.dump",
        "acme.dump.sha256",
    ]
    receipt = json.loads(receipt_path(dest).read_text())
    assert receipt["request_id"] == "7"
    assert (receipt["bytes"], receipt["sha256"], receipt["attempts"]) == (
        11,
        sha256(b"hello world"),
        3,
    )
    assert "Aw7pItGVKFuZ_FOR3U8VFQ==" not in receipt_path(dest).read_text()


def test_published_download_recognises_what_this_request_wrote(tmp_path: Path) -> None:
    dest = tmp_path / "acme.dump"
    publish(dest, b"hello world", attempts=2)
    assert published_download(dest, DownloadBinding("7")) == TransferResult(
        bytes=11, sha256=sha256(b"hello world"), attempts=2
    )


def test_published_download_is_none_for_another_request_or_no_receipt(tmp_path: Path) -> None:
    dest = tmp_path / "acme.dump"
    assert published_download(dest, DownloadBinding("7")) is None  # nothing there
    publish(dest, b"hello world", request_id="7")
    assert published_download(dest, DownloadBinding("8")) is None
    receipt_path(dest).unlink()
    assert published_download(dest, DownloadBinding("7")) is None


def test_published_download_is_none_when_the_file_was_replaced_since(tmp_path: Path) -> None:
    dest = tmp_path / "acme.dump"
    publish(dest, b"hello world")
    dest.write_bytes(b"HELLO WORLD")  # same size, other bytes
    assert published_download(dest, DownloadBinding("7")) is None


def test_published_download_writes_the_checksum_a_crash_left_out(tmp_path: Path) -> None:
    dest = tmp_path / "acme.dump"
    publish(dest, b"hello world")
    checksum_path(dest).unlink()  # killed after the rename, before the .sha256
    assert published_download(dest, DownloadBinding("7")) is not None
    assert checksum_path(dest).read_text() == f"{sha256(b'hello world')}  acme.dump\n"


def test_published_download_never_replaces_a_checksum_it_did_not_write(tmp_path: Path) -> None:
    dest = tmp_path / "acme.dump"
    publish(dest, b"hello world")
    checksum_path(dest).write_text(f"{sha256(b'other')}  acme.dump\n")
    with pytest.raises(DestinationExists, match=r"acme\.dump\.sha256"):
        published_download(dest, DownloadBinding("7"))
    assert checksum_path(dest).read_text() == f"{sha256(b'other')}  acme.dump\n"


def test_a_checksum_left_without_its_file_is_never_replaced(tmp_path: Path) -> None:
    dest = tmp_path / "acme.dump"
    checksum_path(dest).write_text(f"{sha256(b'other')}  acme.dump\n")
    with pytest.raises(DestinationExists, match=r"acme\.dump\.sha256"):
        PartFile.open(dest)
    assert checksum_path(dest).read_text() == f"{sha256(b'other')}  acme.dump\n"
    assert not part_path(dest).exists()


def test_a_receipt_names_no_secret_and_survives_garbage(tmp_path: Path) -> None:
    dest = tmp_path / "acme.dump"
    publish(dest, b"hello world")
    receipt_path(dest).write_text("{not json")
    assert published_download(dest, DownloadBinding("7")) is None


def test_a_kill_between_link_and_unlink_is_tidied_by_the_next_attempt(tmp_path: Path) -> None:
    dest = tmp_path / "acme.dump"
    publish(dest, b"hello world")
    part_path(dest).hardlink_to(dest)  # the part's name was not removed yet
    assert published_download(dest, DownloadBinding("7")) is not None
    assert not part_path(dest).exists()
    assert dest.read_bytes() == b"hello world"
