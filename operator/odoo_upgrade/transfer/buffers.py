"""Buffers the kernel copies file and socket bytes into: page-aligned.

Why: the kernel copies into user memory with `rep movsb`, which on this project's AMD EPYC VM
was five times slower into a destination a few bytes past a page boundary, where `bytearray`
puts a large buffer (after malloc's header): 512 MiB read from the page cache in 4 MiB pieces
took 0.23-0.25 s into a `bytearray`, 0.05 s into a page-aligned buffer (bench/README.md).
Page-aligned buffers are also what `O_DIRECT` needs.
"""

from __future__ import annotations

import mmap


def page_aligned(size: int) -> memoryview:
    """A writable, zeroed buffer of `size` bytes starting on a page boundary."""
    return memoryview(mmap.mmap(-1, size))
