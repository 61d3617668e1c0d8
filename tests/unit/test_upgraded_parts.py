"""Where a restore reads an upgraded download from: a v1 file is both dump and filestore
source; an upgrade/request set gives its directory-format dump and its `filestore/`."""

from __future__ import annotations

from pathlib import Path

from odoo_upgrade.request.upgraded import upgraded_parts


def make_set(root: Path, *dumps: str, filestore: bool = True) -> Path:
    root.mkdir()
    (root / "SHA256SUMS").write_text("")
    (root / "upgrade.log").write_text("done\n")
    for name in dumps:
        (root / name).mkdir()
        (root / name / "toc.dat").write_bytes(b"PGDMP")
    if filestore:
        (root / "filestore" / "ab").mkdir(parents=True)
    return root


def test_a_v1_file_is_its_own_dump_and_filestore_source(tmp_path: Path) -> None:
    upgraded = tmp_path / "acme-18.dump"
    upgraded.write_bytes(b"PK\x03\x04")
    parts = upgraded_parts(upgraded)
    assert (parts.dump, parts.filestore) == (upgraded, upgraded)


def test_a_set_gives_its_directory_dump_and_its_filestore(tmp_path: Path) -> None:
    root = make_set(tmp_path / "acme-18", "upgraded.dump")
    parts = upgraded_parts(root)
    assert (parts.dump, parts.filestore) == (root / "upgraded.dump", root / "filestore")


def test_the_dump_name_the_platform_gave_wins_and_no_filestore_merges_nothing(
    tmp_path: Path,
) -> None:
    root = make_set(tmp_path / "acme-18", "a.dump", "b.dump", filestore=False)
    parts = upgraded_parts(root, "b.dump")
    assert (parts.dump, parts.filestore) == (root / "b.dump", None)


def test_a_set_with_two_dumps_and_no_name_is_left_to_the_restore_to_refuse(
    tmp_path: Path,
) -> None:
    root = make_set(tmp_path / "acme-18", "a.dump", "b.dump")
    assert upgraded_parts(root).dump == root  # not a dump: refused naming the path
