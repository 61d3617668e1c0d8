"""The step order of an upgrade request, and the next step from what is recorded so far.

Both drivers use it: the operator derives `Progress` from `.status`, the CLI from its state
file. Neither keeps the flow's position anywhere else, so a restart resumes where it stopped.

    dump -> create -> upload -> process -> wait -> download -> restore -> finish
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Step(StrEnum):
    """One step of the flow (DESIGN.md §4), in order."""

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

    The dump comes before `create`, so that a dump that fails never costs a platform request;
    once the request exists its dump was made (or given), whatever the record says.
    """
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
