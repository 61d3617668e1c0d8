"""Publishing under a final name without ever replacing what is there: `rename(2)` replaces an
existing file (and an empty directory) silently; Linux's `renameat2(RENAME_NOREPLACE)` refuses
atomically. Used by every step that publishes a directory (the upgraded set, a filestore)."""

from __future__ import annotations

import ctypes
import errno
import os
from pathlib import Path

_AT_FDCWD = -100
_RENAME_NOREPLACE = 1
_libc = ctypes.CDLL(None, use_errno=True)


def rename_without_replacing(source: Path, destination: Path) -> bool:
    """Rename `source` to `destination`; False (nothing renamed) when `destination` exists."""
    renameat2 = getattr(_libc, "renameat2", None)
    if renameat2 is not None:
        done = renameat2(
            _AT_FDCWD, os.fsencode(source), _AT_FDCWD, os.fsencode(destination), _RENAME_NOREPLACE
        )
        if done == 0:
            return True
        code = ctypes.get_errno()
        if code == errno.EEXIST:
            return False
        if code not in (errno.ENOSYS, errno.EINVAL):
            raise OSError(code, os.strerror(code), str(destination))
    # No renameat2 (old kernel, other libc or file system): check, then rename.
    if os.path.lexists(destination):
        return False
    os.rename(source, destination)
    return True
