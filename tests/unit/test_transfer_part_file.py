"""The on-disk contract of downloads: `.part` beside the file, atomic publish, `.sha256`."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest

from odoo_upgrade.transfer import DestinationExists, SizeMismatch, TransferError
from odoo_upgrade.transfer.part_file import (
    PartFile,
    checksum_line,
    checksum_path,
    part_path,
    write_checksum_file,
)


def test_part_file_is_hidden_beside_the_destination(tmp_path: Path) -> None:
    assert part_path(tmp_path / "acme.dump") == tmp_path / ".acme.dump.part"
    assert checksum_path(tmp_path / "acme.dump") == tmp_path / "acme.dump.sha256"


def test_checksum_file_is_accepted_by_sha256sum(tmp_path: Path) -> None:
    dump = tmp_path / "acme.dump"
    dump.write_bytes(b"upgraded")
    write_checksum_file(dump, hashlib.sha256(b"upgraded").hexdigest())
    assert checksum_path(dump).read_text() == checksum_line(
        hashlib.sha256(b"upgraded").hexdigest(), "acme.dump"
    )
    subprocess.run(["sha256sum", "-c", "acme.dump.sha256"], cwd=tmp_path, check=True)


def test_existing_destination_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    dest = tmp_path / "acme.dump"
    dest.write_bytes(b"precious")
    with pytest.raises(DestinationExists, match=r"acme\.dump"):
        PartFile.open(dest)
    assert dest.read_bytes() == b"precious"
    assert not part_path(dest).exists()


def test_finished_part_becomes_the_destination_with_its_checksum(tmp_path: Path) -> None:
    dest = tmp_path / "acme.dump"
    part = PartFile.open(dest)
    part.append(b"hello ")
    part.append(b"world")
    digest = part.finish(11)
    assert dest.read_bytes() == b"hello world"
    assert digest == hashlib.sha256(b"hello world").hexdigest()
    assert checksum_path(dest).read_text() == f"{digest}  acme.dump\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["acme.dump", "acme.dump.sha256"]


def test_resumed_part_is_rehashed_so_the_checksum_covers_the_whole_file(tmp_path: Path) -> None:
    dest = tmp_path / "acme.dump"
    part_path(dest).write_bytes(b"left by a crashed run, ")
    part = PartFile.open(dest)
    assert part.size == len(b"left by a crashed run, ")
    part.append(b"then resumed")
    digest = part.finish(None)
    assert digest == hashlib.sha256(b"left by a crashed run, then resumed").hexdigest()


def test_destination_appearing_meanwhile_is_not_clobbered(tmp_path: Path) -> None:
    dest = tmp_path / "acme.dump"
    part = PartFile.open(dest)
    part.append(b"ours")
    dest.write_bytes(b"someone else's")
    with pytest.raises(DestinationExists):
        part.finish(4)
    assert dest.read_bytes() == b"someone else's"
    assert part_path(dest).read_bytes() == b"ours"  # kept, nothing lost
    assert not checksum_path(dest).exists()


def test_size_mismatch_leaves_nothing_under_the_final_name(tmp_path: Path) -> None:
    dest = tmp_path / "acme.dump"
    part = PartFile.open(dest)
    part.append(b"short")
    with pytest.raises(SizeMismatch, match="expected 10"):
        part.finish(10)
    assert list(tmp_path.iterdir()) == []


def test_second_download_to_the_same_destination_is_refused(tmp_path: Path) -> None:
    dest = tmp_path / "acme.dump"
    first = PartFile.open(dest)
    try:
        with pytest.raises(TransferError, match="in progress"):
            PartFile.open(dest)
    finally:
        first.close()


def test_restart_discards_what_was_received(tmp_path: Path) -> None:
    dest = tmp_path / "acme.dump"
    part = PartFile.open(dest)
    part.append(b"wrong bytes")
    part.restart()
    part.append(b"right")
    assert part.finish(5) == hashlib.sha256(b"right").hexdigest()
    assert dest.read_bytes() == b"right"


def test_missing_destination_directory_is_named(tmp_path: Path) -> None:
    with pytest.raises(TransferError, match="does not exist"):
        PartFile.open(tmp_path / "nowhere" / "acme.dump")


def test_bytes_another_process_wrote_are_absorbed_into_the_hash(tmp_path: Path) -> None:
    dest = tmp_path / "acme.dump"
    part_path(dest).write_bytes(b"ours, ")  # resumed: hashed when opened
    part = PartFile.open(dest)
    data = bytes(range(256)) * 20_000  # more than one slice and one page
    with open(part_path(dest), "ab") as other:  # as OpenSSH's sftp writes it
        other.write(data)
    part.absorb(upto=6 + 100_000)
    assert part.size == 6 + 100_000
    part.absorb()
    assert part.size == 6 + len(data)
    assert part.finish(6 + len(data)) == hashlib.sha256(b"ours, " + data).hexdigest()


def test_bytes_not_absorbed_are_cut_off(tmp_path: Path) -> None:
    dest = tmp_path / "acme.dump"
    part = PartFile.open(dest)
    with open(part_path(dest), "ab") as other:
        other.write(b"settled|unsettled")
    part.absorb(upto=len(b"settled"))
    part.drop_unhashed()
    assert part_path(dest).read_bytes() == b"settled"
    part.close()
