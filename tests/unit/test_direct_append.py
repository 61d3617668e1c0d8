"""Received bytes reach the part file past the page cache, whole and hashed, whatever the
alignment of where a resume starts, and a failed write never leaves the hash ahead of the file."""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from odoo_upgrade.transfer import direct_append
from odoo_upgrade.transfer.direct_append import ALIGN, BUFFER_SIZE
from odoo_upgrade.transfer.part_file import PartFile, part_path

REPO = Path(__file__).resolve().parents[2]


def receive(part: PartFile, data: bytes, seed: int = 7) -> bool:
    """Feed `data` to `part.receiving()` in pieces of socket-like, varying sizes; return
    whether full buffers went past the page cache."""
    pieces = random.Random(seed)
    offset = 0
    with part.receiving() as sink:
        while offset < len(data):
            space = sink.space()
            count = min(len(space), len(data) - offset, pieces.randint(1, 300_000))
            space[:count] = data[offset : offset + count]
            sink.took(count)
            offset += count
        return sink.direct


def sample(size: int) -> bytes:
    return random.Random(size).randbytes(size)


def test_received_bytes_are_published_whole_with_their_sha256(tmp_path: Path) -> None:
    data = sample(3 * BUFFER_SIZE + 12345)
    dest = tmp_path / "upgraded.dump"
    part = PartFile.open(dest)
    assert receive(part, data), "tmp_path's filesystem takes O_DIRECT"
    assert part.size == len(data)
    assert part.finish(len(data)) == hashlib.sha256(data).hexdigest()
    assert dest.read_bytes() == data


def test_received_bytes_do_not_fill_the_page_cache(tmp_path: Path) -> None:
    """The pod's page cache counts against its memory limit: only the last, partial buffer
    (written through the cache) is there once the bytes are written."""
    tail = 12345
    part = PartFile.open(tmp_path / "upgraded.dump")
    receive(part, sample(3 * BUFFER_SIZE + tail))
    resident = subprocess.run(
        ["fincore", "--bytes", "--noheadings", "--output", "RES", str(part.path)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert int(resident.stdout) <= tail + 2 * ALIGN
    part.discard()


@pytest.mark.parametrize("kept", [1, ALIGN - 1, ALIGN, BUFFER_SIZE + 513])
def test_a_resumed_part_of_any_size_continues_exactly_after_its_bytes(
    tmp_path: Path, kept: int
) -> None:
    data = sample(2 * BUFFER_SIZE + 777)
    dest = tmp_path / "upgraded.dump"
    part_path(dest).write_bytes(data[:kept])
    part = PartFile.open(dest)
    assert part.size == kept
    receive(part, data[kept:])
    assert part.finish(len(data)) == hashlib.sha256(data).hexdigest()
    assert dest.read_bytes() == data


def test_two_attempts_in_a_row_append_after_each_other(tmp_path: Path) -> None:
    data = sample(BUFFER_SIZE + 4097 + BUFFER_SIZE)
    dest = tmp_path / "upgraded.dump"
    part = PartFile.open(dest)
    receive(part, data[: BUFFER_SIZE + 4097], seed=1)  # a connection dropped mid-buffer
    receive(part, data[BUFFER_SIZE + 4097 :], seed=2)
    assert part.finish(len(data)) == hashlib.sha256(data).hexdigest()
    assert dest.read_bytes() == data


def test_a_filesystem_refusing_o_direct_is_written_through_the_page_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Opening with O_DIRECT fails (tmpfs before Linux 6.6), or the flag is taken and each
    write refused with EINVAL (some FUSE filesystems): both fall back to buffered writes."""
    data = sample(2 * BUFFER_SIZE + 5)
    monkeypatch.setattr(direct_append, "_open_direct", lambda path: None)
    part = PartFile.open(tmp_path / "a.dump")
    assert not receive(part, data)
    assert part.finish(len(data)) == hashlib.sha256(data).hexdigest()
    assert (tmp_path / "a.dump").read_bytes() == data

    monkeypatch.undo()
    real_pwrite = os.pwrite

    def refuse_direct(fd: int, data: memoryview, offset: int) -> int:
        if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr(direct_append.os, "pwrite", refuse_direct)
    part = PartFile.open(tmp_path / "b.dump")
    assert not receive(part, data)
    assert part.finish(len(data)) == hashlib.sha256(data).hexdigest()
    assert (tmp_path / "b.dump").read_bytes() == data


def test_a_failed_write_leaves_the_part_and_its_hash_at_its_last_whole_write(
    tmp_path: Path,
) -> None:
    """A real kernel refusal: the child's file size limit (RLIMIT_FSIZE, EFBIG), as a full
    volume refuses with ENOSPC. The resumed part then continues from the bytes on disk."""
    data = sample(3 * BUFFER_SIZE)
    source = tmp_path / "source.bin"
    source.write_bytes(data)
    dest = tmp_path / "upgraded.dump"
    limit = BUFFER_SIZE + BUFFER_SIZE // 2
    script = textwrap.dedent(
        f"""
        import random, resource, signal, sys
        from pathlib import Path
        from odoo_upgrade.transfer.part_file import PartFile
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, resource.RLIM_INFINITY))
        data = Path({str(source)!r}).read_bytes()
        part = PartFile.open(Path({str(dest)!r}))
        offset = 0
        try:
            with part.receiving() as sink:
                while offset < len(data):
                    space = sink.space()
                    count = min(len(space), len(data) - offset, 65536)
                    space[:count] = data[offset : offset + count]
                    sink.took(count)
                    offset += count
        except OSError as exc:
            print(exc.errno, part.size, part.hasher.hexdigest())
            sys.exit(0)
        sys.exit("no error")
        """
    )
    child = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, check=False
    )
    assert child.returncode == 0, child.stderr
    code, size, digest = child.stdout.split()
    on_disk = part_path(dest).read_bytes()
    assert int(code) == errno.EFBIG
    assert int(size) == len(on_disk) <= limit and on_disk == data[: len(on_disk)]
    assert digest == hashlib.sha256(on_disk).hexdigest()
    part = PartFile.open(dest)
    receive(part, data[part.size :])
    assert part.finish(len(data)) == hashlib.sha256(data).hexdigest()
    assert dest.read_bytes() == data
