"""IdleHash: the sha256 of a file hashed beside a transfer, on CPU time nothing else wants."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import pytest

from odoo_upgrade.transfer.errors import SizeMismatch
from odoo_upgrade.transfer.file_digest import HASH_BLOCK
from odoo_upgrade.transfer.idle_hash import IdleHash


def open_descriptors() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


@pytest.mark.parametrize("size", [0, 1, HASH_BLOCK - 1, HASH_BLOCK, 3 * HASH_BLOCK + 5])
def test_digest_is_the_files_wherever_the_idle_thread_hands_over(tmp_path: Path, size: int) -> None:
    """`finish()` at once: the idle thread stopped anywhere from its first block to the end,
    and the caller hashed the rest."""
    path = tmp_path / "db.dump"
    data = os.urandom(size)
    path.write_bytes(data)
    for _ in range(5):
        with IdleHash(path) as idle:
            assert idle.finish(size) == hashlib.sha256(data).hexdigest()


def test_hashing_thread_runs_only_on_idle_cpu_and_the_caller_keeps_its_priority(
    tmp_path: Path,
) -> None:
    path = tmp_path / "big.dump"
    with path.open("wb") as file:
        file.truncate(2 * 1024**3)  # sparse: read as zeros at hashing speed, about a second
    caller_policy = os.sched_getscheduler(0)
    seen: set[int] = set()
    with IdleHash(path) as idle:
        thread_id = idle.thread_id
        assert thread_id is not None
        for _ in range(1000):
            try:
                seen.add(os.sched_getscheduler(thread_id))
            except ProcessLookupError:
                break  # the thread finished the file
            if os.SCHED_IDLE in seen:
                break
    assert os.SCHED_IDLE in seen
    assert os.sched_getscheduler(0) == caller_policy


def test_a_file_rewritten_while_being_hashed_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "db.dump"
    path.write_bytes(b"a" * (2 * HASH_BLOCK))
    with IdleHash(path) as idle:
        with path.open("r+b") as file:
            file.write(b"b")
        stamp = path.stat()
        os.utime(path, ns=(stamp.st_atime_ns, stamp.st_mtime_ns + 1_000_000))
        with pytest.raises(SizeMismatch, match=r"db\.dump changed while being sent"):
            idle.finish(2 * HASH_BLOCK)


def test_a_file_grown_while_being_hashed_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "db.dump"
    path.write_bytes(b"a" * 1000)
    with IdleHash(path) as idle:
        with path.open("ab") as file:
            file.write(b"more")
        with pytest.raises(SizeMismatch):
            idle.finish(1000)


def test_a_file_of_another_size_than_sent_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "db.dump"
    path.write_bytes(b"a" * 1000)
    with IdleHash(path) as idle, pytest.raises(SizeMismatch):
        idle.finish(999)


def test_close_without_finish_stops_the_thread_and_closes_the_file(tmp_path: Path) -> None:
    path = tmp_path / "big.dump"
    with path.open("wb") as file:
        file.truncate(2 * 1024**3)
    before = open_descriptors()
    idle = IdleHash(path)
    assert any(t.name == IdleHash.NAME for t in threading.enumerate())
    idle.close()
    assert not any(t.name == IdleHash.NAME for t in threading.enumerate())
    assert open_descriptors() == before
