"""A growing file is flushed behind its writer; a failed flush is never lost."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from odoo_upgrade.transfer.part_file import PartFile
from odoo_upgrade.transfer.write_behind import STEP, WriteBehind

PIECE = 1024 * 1024


def _wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 30  # liveness only: the flush happens without being asked
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def test_bytes_become_durable_while_the_writer_goes_on(tmp_path: Path) -> None:
    fd = os.open(tmp_path / "growing", os.O_WRONLY | os.O_CREAT, 0o600)
    behind = WriteBehind(fd, step=64 * 1024)
    try:
        os.write(fd, b"x" * 256 * 1024)
        behind.advance(256 * 1024)
        _wait_for(lambda: behind.flushed == 256 * 1024, "the background flush")
        os.write(fd, b"y" * 1024)
        behind.advance(257 * 1024)  # less than a step more: no flush asked for
        behind.settle()
        assert behind.flushed == 256 * 1024
    finally:
        behind.close()
        os.close(fd)


def test_a_failed_background_flush_is_raised_before_the_file_is_published() -> None:
    # fdatasync on a pipe fails (EINVAL): a real kernel error, as EIO from a disk would be.
    read_end, write_end = os.pipe()
    behind = WriteBehind(write_end, step=1)
    try:
        behind.advance(1)
        with pytest.raises(OSError):
            behind.settle()
        behind.settle()  # raised once, as the kernel reports it once
        assert behind.flushed == 0
    finally:
        behind.close()
        os.close(read_end)
        os.close(write_end)


def test_a_part_cut_back_while_flushed_behind_keeps_exactly_its_new_bytes(tmp_path: Path) -> None:
    dest = tmp_path / "big.dump"
    part = PartFile.open(dest)
    for _ in range(STEP // PIECE + 8):  # past one step: the background flush runs
        part.append(b"a" * PIECE)
    part.restart()
    second = hashlib.sha256()
    for index in range(STEP // PIECE + 4):
        piece = bytes([index % 251]) * PIECE
        part.append(piece)
        second.update(piece)
    size = part.size
    assert part.finish(size) == second.hexdigest()
    assert dest.stat().st_size == size
    assert hashlib.sha256(dest.read_bytes()).hexdigest() == second.hexdigest()
