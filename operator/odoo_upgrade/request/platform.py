"""What the flow needs of a platform API, whichever it is (DESIGN.md §1 and §1b).

The database/v1 client and the upgrade/request client each implement `Platform`; the flow
(operator and CLI) is written against this protocol only, so a second API is a second
implementation, not a second state machine.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from odoo_upgrade.request.states import (
    UPGRADE_REQUEST_STATES,
    V1_STATES,
    PlatformStates,
    StateClass,
)

DEFAULT_PLATFORM_URL = "https://upgrade.odoo.com"
# One `env_vars` entry of an upgrade/request `create` (`spec.platform.env`, `--env`).
ENV_VAR = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=.*$", re.DOTALL)


class PlatformApi(StrEnum):
    """`spec.platform.api` / `--api`."""

    DATABASE_V1 = "database-v1"
    UPGRADE_REQUEST = "upgrade-request"


def env_var_problem(entry: object) -> str | None:
    """Why `entry` is not a `NAME=VALUE` variable for `env_vars`; None when it is one."""
    if not isinstance(entry, str) or not ENV_VAR.match(entry):
        return f"expected NAME=VALUE (a name of letters, digits and _), got {entry!r}"
    return None


def serves_log(api: str) -> bool:
    """Whether the API serves the upgrade log while the platform works (`Platform.log_tail`)."""
    return api == PlatformApi.UPGRADE_REQUEST


def states_of(api: str) -> PlatformStates:
    """The states the API `api` uses."""
    return UPGRADE_REQUEST_STATES if api == PlatformApi.UPGRADE_REQUEST else V1_STATES


@dataclass(frozen=True, repr=False)
class RequestOrder:
    """What `create` asks for. `contract` is a secret."""

    contract: str
    email: str
    target: str
    aim: str
    filename: str
    timezone: str | None = None
    env_vars: tuple[str, ...] = ()
    ssh_public_key: str | None = None  # upgrade/request: the key allowed to transfer

    def __repr__(self) -> str:
        return f"RequestOrder(target={self.target!r}, aim={self.aim!r})"


@dataclass(frozen=True, repr=False)
class RequestRef:
    """How to address an existing request: its id and its secret (v1 key, or token)."""

    request_id: int
    secret: str
    host: str | None = None  # upgrade/request: the assigned host every later call goes to

    def __repr__(self) -> str:
        return f"RequestRef(request_id={self.request_id})"


@dataclass(frozen=True, repr=False)
class CreatedRequest:
    """The answer to `create`: the request and what must be stored before anything else."""

    ref: RequestRef
    state: str
    secret_values: dict[str, str]  # request Secret keys -> values (secret_keys)
    info: str | None = None  # a warning the platform wants shown

    def __repr__(self) -> str:
        return f"CreatedRequest(request_id={self.ref.request_id}, state={self.state!r})"


@dataclass(frozen=True)
class PlatformStatus:
    """The platform's view of a request, without secrets or key-bearing URLs."""

    state: str
    state_class: StateClass
    public: dict[str, Any] = field(default_factory=dict)  # `.status.platform` (camelCase)
    message: str | None = None  # why it failed, as the platform said it


class Platform(Protocol):
    """One platform API, as the flow drives it."""

    api: PlatformApi
    states: PlatformStates

    async def create(self, order: RequestOrder) -> CreatedRequest:
        """Open a new (paid) request: called at most once per resource, ever."""
        ...

    async def status(self, ref: RequestRef) -> PlatformStatus:
        """The request's state now."""
        ...

    async def process(self, ref: RequestRef) -> dict[str, Any]:
        """Start the upgrade of the uploaded dump; public facts to mirror (camelCase)."""
        ...

    async def log_tail(self, ref: RequestRef, from_byte: int) -> tuple[str, int]:
        """The upgrade log from `from_byte` on, and the offset to ask from next time
        (nothing on an API without a log: see `serves_log`)."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...
