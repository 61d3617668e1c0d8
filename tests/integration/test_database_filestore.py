"""The new filestore: the production one's copy plus the upgrade's files; the source unchanged."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from odoo_upgrade.database import (
    DatabaseError,
    FilestoreArchiveInvalid,
    FilestoreDestinationExists,
    FilestorePathsOverlap,
    FilestoreSourceNotFound,
    FilestoreSymlinkedDirectory,
    build_filestore,
    check_filestore,
)
from odoo_upgrade.database.filestore import part_dir
from tests.support.odoo_db import attachment_content, filestore_checksums, store_fname, zip_bytes


def make_filestore(root: Path, count: int = 40) -> Path:
    for index in range(count):
        content = attachment_content("fs", index)
        path = root / store_fname(content)[0]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    return root


@pytest.fixture
def source(tmp_path: Path) -> Path:
    return make_filestore(tmp_path / "filestore" / "acme")


def upgraded_archive(tmp_path: Path, members: dict[str, bytes]) -> Path:
    path = tmp_path / "upgraded.zip"
    path.write_bytes(zip_bytes({"dump.sql": b"-- sql\n", **members}))
    return path


def test_copy_links_on_one_filesystem_and_merges_without_touching_the_source(
    source: Path, tmp_path: Path
) -> None:
    before = filestore_checksums(source)
    existing = sorted(before)[0]  # the upgrade rewrites one file the source has, and adds one
    archive = upgraded_archive(
        tmp_path,
        {f"filestore/{existing}": b"rewritten by the upgrade", "filestore/zz/zz1": b"new file"},
    )
    destination = tmp_path / "filestore" / "acme_18"

    result = build_filestore(source, destination, upgraded=archive)

    assert result.files == len(before) + 1 and result.merged == 2 and not result.adopted
    assert result.linked == len(before) and result.copied == 0
    assert (destination / existing).read_bytes() == b"rewritten by the upgrade"
    assert (destination / "zz" / "zz1").read_bytes() == b"new file"
    assert filestore_checksums(source) == before  # the linked file was replaced, not written
    untouched = sorted(before)[1]
    assert os.stat(destination / untouched).st_ino == os.stat(source / untouched).st_ino
    assert not part_dir(destination).exists()


@pytest.fixture
def other_filesystem() -> Iterator[Path]:
    shm = Path("/dev/shm")
    if not shm.is_dir() or shm.stat().st_dev == Path(tempfile.gettempdir()).stat().st_dev:
        pytest.skip("no second filesystem (/dev/shm) to copy across")
    directory = Path(tempfile.mkdtemp(dir=shm, prefix="odoo-upgrade-fs-"))
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def test_across_filesystems_files_are_copied(other_filesystem: Path, tmp_path: Path) -> None:
    source = make_filestore(other_filesystem / "acme", count=25)
    before = filestore_checksums(source)

    result = build_filestore(source, tmp_path / "acme_18")

    assert result.copied == 25 and result.linked == 0 and result.files == 25
    assert filestore_checksums(tmp_path / "acme_18") == before == filestore_checksums(source)


def test_an_upgraded_filestore_directory_is_merged(source: Path, tmp_path: Path) -> None:
    upgraded = tmp_path / "download" / "filestore"
    (upgraded / "ab").mkdir(parents=True)
    (upgraded / "ab" / "ab12").write_bytes(b"extracted attachment")

    result = build_filestore(source, tmp_path / "acme_18", upgraded=upgraded)

    assert (tmp_path / "acme_18" / "ab" / "ab12").read_bytes() == b"extracted attachment"
    assert result.merged == 1 and result.files == 41


def test_an_existing_path_is_refused_and_left_alone(source: Path, tmp_path: Path) -> None:
    destination = tmp_path / "filestore" / "acme_18"
    destination.mkdir()
    (destination / "mine").write_text("keep me")

    with pytest.raises(FilestoreDestinationExists) as raised:
        build_filestore(source, destination)

    assert raised.value.field == "restore.filestore.path" and str(destination) in str(raised.value)
    assert sorted(p.name for p in destination.iterdir()) == ["mine"]
    assert not part_dir(destination).exists()


def test_a_missing_source_path_names_its_field(tmp_path: Path) -> None:
    with pytest.raises(FilestoreSourceNotFound) as raised:
        check_filestore(tmp_path / "nope", tmp_path / "new")

    assert raised.value.reason == "FilestoreSourceNotFound"
    assert raised.value.field == "restore.filestore.sourcePath"
    assert not (tmp_path / "new").exists()


def test_a_path_inside_the_source_is_refused(source: Path) -> None:
    with pytest.raises(FilestorePathsOverlap):
        build_filestore(source, source / "copy")
    assert not (source / "copy").exists()


def test_an_unsafe_archive_member_merges_nothing(source: Path, tmp_path: Path) -> None:
    archive = upgraded_archive(tmp_path, {"filestore/../../escape": b"x"})

    with pytest.raises(FilestoreArchiveInvalid):
        build_filestore(source, tmp_path / "acme_18", upgraded=archive)

    assert not (tmp_path / "acme_18").exists() and not (tmp_path / "escape").exists()


@pytest.mark.parametrize("relative", [False, True], ids=["absolute-link", "relative-link"])
@pytest.mark.parametrize("form", ["zip", "directory"])
def test_a_symlinked_directory_in_the_source_is_never_written_through(
    tmp_path: Path, relative: bool, form: str
) -> None:
    """A hash directory of the source filestore kept elsewhere (a link, e.g. to another disk):
    the copy keeps the link, so merging the upgraded files into it would write into the
    source's storage. It is refused naming the link; nothing there changes."""
    source = make_filestore(tmp_path / "filestore" / "acme")
    shared = tmp_path / "shared" / "ab"
    shared.mkdir(parents=True)
    (shared / "abc").write_bytes(b"the production attachment")
    (source / "ab").symlink_to("../../shared/ab" if relative else shared)
    upgraded: Path
    if form == "zip":
        upgraded = upgraded_archive(
            tmp_path, {"filestore/ab/abc": b"upgraded", "filestore/ab/zzz": b"new"}
        )
    else:
        upgraded = tmp_path / "download" / "filestore"
        (upgraded / "ab").mkdir(parents=True)
        (upgraded / "ab" / "abc").write_bytes(b"upgraded")
        (upgraded / "ab" / "zzz").write_bytes(b"new")
    destination = tmp_path / "filestore" / "acme_18"

    with pytest.raises(FilestoreSymlinkedDirectory, match="ab") as refused:
        build_filestore(source, destination, upgraded=upgraded)

    assert sorted(p.name for p in shared.iterdir()) == ["abc"]
    assert (shared / "abc").read_bytes() == b"the production attachment"
    assert not destination.exists()
    assert "sourcePath" in str(refused.value)


def test_a_crashed_copy_is_redone_and_a_finished_one_is_recognised(
    source: Path, tmp_path: Path
) -> None:
    destination = tmp_path / "acme_18"
    leftover = part_dir(destination)
    (leftover / "half").mkdir(parents=True)
    (leftover / "half" / "file").write_text("from the crashed run")

    first = build_filestore(source, destination, token="uid-1")
    again = build_filestore(source, destination, token="uid-1")

    assert not (destination / "half").exists() and not leftover.exists()
    assert again.adopted and again.files == first.files == 40
    assert check_filestore(source, destination, token="uid-1") is True
    with pytest.raises(DatabaseError, match="exists already"):
        build_filestore(source, destination, token="another resource")
