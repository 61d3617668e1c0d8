"""The step order of an upgrade request, and the next step from what is recorded so far.

Both drivers use it: the operator derives `Progress` from `.status`, the CLI from its state
file. Neither keeps the flow's position anywhere else, so a restart resumes where it stopped.

    check -> dump -> create -> upload -> process -> wait -> download -> restore -> finish
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Step(StrEnum):
    """One step of the flow (DESIGN.md §4), in order."""

    CHECK = "check"  # pre-flight, only with a source database or a restore target
    DUMP = "dump"  # only with a source database
    CREATE = "create"
    UPLOAD = "upload"
    PROCESS = "process"
    WAIT = "wait"  # poll the platform until the upgrade is final
    DOWNLOAD = "download"
    RESTORE = "restore"  # only with a restore target
    FINISH = "finish"


@dataclass(frozen=True)
class Progress:
    """What has been done and recorded for one request."""

    check_wanted: bool = False  # a database is dumped or restored: pre-flight first
    checked: bool = False
    dump_wanted: bool = False
    dumped: bool = False
    created: bool = False
    uploaded: bool = False
    processed: bool = False
    upgraded: bool = False  # the platform reached a success state
    downloaded: bool = False
    restore_wanted: bool = False
    restored: bool = False


def next_step(progress: Progress) -> Step:
    """The first step not done yet.

    The pre-flight check and the dump come before `create`, so that a database that cannot be
    dumped or restored never costs a platform request; once the dump exists the check is not
    repeated, once the request exists its dump was made (or given), whatever the record says.
    """
    if progress.check_wanted and not progress.checked and not (progress.dumped or progress.created):
        return Step.CHECK
    if progress.dump_wanted and not progress.dumped and not progress.created:
        return Step.DUMP
    if not progress.created:
        return Step.CREATE
    if not progress.uploaded:
        return Step.UPLOAD
    if not progress.processed:
        return Step.PROCESS
    if not progress.upgraded:
        return Step.WAIT
    if not progress.downloaded:
        return Step.DOWNLOAD
    if progress.restore_wanted and not progress.restored:
        return Step.RESTORE
    return Step.FINISH
