"""Platform states and what they mean for the flow, per platform API.

Each API names its own states; the flow only needs their class. A state the platform invents
later counts as "still in progress" (DESIGN.md §1): the flow keeps polling and logs it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class StateClass(StrEnum):
    """What a platform state tells the flow."""

    AWAITING_DUMP = "awaiting-dump"  # created, the dump and `process` are still to come
    IN_PROGRESS = "in-progress"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


@dataclass(frozen=True)
class PlatformStates:
    """The states one platform API uses, by class."""

    awaiting_dump: frozenset[str]
    in_progress: frozenset[str]
    succeeded: frozenset[str]
    failed: frozenset[str]

    def classify(self, state: str | None) -> StateClass:
        """The class of `state`; unknown states are in progress."""
        if state in self.awaiting_dump:
            return StateClass.AWAITING_DUMP
        if state in self.succeeded:
            return StateClass.SUCCEEDED
        if state in self.failed:
            return StateClass.FAILED
        return StateClass.IN_PROGRESS

    def is_known(self, state: str | None) -> bool:
        return state in self.awaiting_dump | self.in_progress | self.succeeded | self.failed

    def is_final(self, state: str | None) -> bool:
        return self.classify(state) in (StateClass.SUCCEEDED, StateClass.FAILED)

    def needs_process(self, state: str | None) -> bool:
        """Whether `process` is still to be called: past the first state means it was."""
        return self.classify(state) is StateClass.AWAITING_DUMP


# database/v1: `draft` until `process`; `invalid` carries the reason in `customer_message`;
# `delivered` after `skip_test`.
V1_STATES = PlatformStates(
    awaiting_dump=frozenset({"draft"}),
    in_progress=frozenset({"pending", "processing", "testing"}),
    succeeded=frozenset({"done", "delivered"}),
    failed=frozenset({"invalid"}),
)

# upgrade/request: `new` until the dump is in and `process` called; `failed` carries `reason`.
UPGRADE_REQUEST_STATES = PlatformStates(
    awaiting_dump=frozenset({"new"}),
    in_progress=frozenset({"pending", "progress"}),
    succeeded=frozenset({"done"}),
    failed=frozenset({"failed", "cancelled"}),
)


# How a request that ended in a failure state is reported: condition reason and wording.
_FAILURE_REPORTS = {
    "invalid": ("RequestInvalid", "the platform declared the request invalid"),
    "failed": ("RequestFailed", "the platform could not upgrade the database"),
    "cancelled": ("RequestCancelled", "the request was cancelled on the platform"),
}


def failure_report(state: str) -> tuple[str, str]:
    """(reason, wording) for a request that ended in the failure state `state`."""
    return _FAILURE_REPORTS.get(state, ("RequestFailed", f"the request ended {state!r}"))
