"""How `odoo-upgrade` ends: one exit code per kind of trouble, and the text that explains it.

Every message goes through `redact()`: platform failures may quote the contract
(`CONTRACT:NOT_FOUND` does), and transfer errors may quote a key-bearing URL.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click

from odoo_upgrade.platform.errors import (
    Failure,
    PlatformError,
    PlatformFailure,
    PlatformOutcomeUnknown,
)
from odoo_upgrade.redact import redact

EXIT_OK = 0
EXIT_PLATFORM_FAILURE = 1
EXIT_USAGE = 2
EXIT_INVALID = 3
EXIT_TRANSIENT_EXHAUSTED = 4
EXIT_INTERRUPTED = 130

EXIT_CODES_HELP = (
    "\b\nExit codes:\n"
    "  0    success\n"
    "  1    the platform refused (its failures are printed) or a transfer failed\n"
    "  2    usage error or bad input (missing contract, existing output, state file mismatch,\n"
    "       a database not found, refused credentials, a restore target that exists)\n"
    "  3    the upgrade ended `invalid`, `failed` or `cancelled` (the platform's reason is\n"
    "       printed)\n"
    "  4    transient platform or network errors persisted after every retry\n"
    "  130  interrupted (Ctrl-C); rerunning `run` continues the same request"
)


class UsageProblem(Exception):
    """Bad input found after click's own checks (exit code 2)."""


def describe_failure(failure: Failure) -> list[str]:
    """A platform failure as lines: reason and message, then code/value/expected if sent."""
    lines = [f"{failure.reason}: {failure.message}"]
    if failure.code is not None:
        lines.append(f"  code: {failure.code}")
    if failure.value is not None:
        lines.append(f"  value: {failure.value}")
    if failure.expected:
        lines.append(f"  expected: {', '.join(failure.expected)}")
    return lines


def exit_code_for(exc: BaseException) -> int:
    """The documented exit code of an error (see EXIT_CODES_HELP)."""
    # Imported here: the transfer and run modules pull in httpx/paramiko, which --help must not.
    from odoo_upgrade.database import FIXED_OUTSIDE, DatabaseError
    from odoo_upgrade.runflow import RunRefused, UpgradeInvalid
    from odoo_upgrade.runstate import StateFileError
    from odoo_upgrade.transfer import DestinationExists, TransferError

    if isinstance(exc, UsageProblem | RunRefused | StateFileError | DestinationExists):
        return EXIT_USAGE
    if isinstance(exc, DatabaseError):  # bad input names the flag; a failed dump/restore is 1
        if exc.transient:
            return EXIT_TRANSIENT_EXHAUSTED
        return EXIT_USAGE if exc.reason in FIXED_OUTSIDE else EXIT_PLATFORM_FAILURE
    if isinstance(exc, UpgradeInvalid):
        return EXIT_INVALID
    if isinstance(exc, PlatformOutcomeUnknown):
        return EXIT_TRANSIENT_EXHAUSTED
    if isinstance(exc, PlatformError | TransferError) and exc.transient:
        return EXIT_TRANSIENT_EXHAUSTED
    return EXIT_PLATFORM_FAILURE


def error_lines(exc: BaseException) -> list[str]:
    """What to print on stderr for an error (not yet redacted)."""
    from odoo_upgrade.runflow import UpgradeInvalid

    if isinstance(exc, PlatformFailure):
        lines = [f"error: the platform refused `{exc.method}`:"]
        for failure in exc.failures:
            lines += ["  " + line for line in describe_failure(failure)]
        return lines
    if isinstance(exc, UpgradeInvalid):
        return [
            f"error: request {exc.request_id} ended `{exc.state}` on the platform:",
            f"  {exc.customer_message or '(the platform gave no reason)'}",
        ]
    if isinstance(exc, OSError) and exc.filename is not None:
        return [f"error: {exc.filename}: {exc.strerror or exc}"]
    return [f"error: {exc}"]


def error_json(exc: BaseException, code: int) -> dict[str, Any]:
    """The error as the JSON object printed on stdout under `--json`."""
    from odoo_upgrade.runflow import UpgradeInvalid

    data: dict[str, Any] = {"error": str(exc), "exit_code": code}
    if isinstance(exc, PlatformFailure):
        data["failures"] = [f.to_json() for f in exc.failures]
    if isinstance(exc, UpgradeInvalid):
        data["customer_message"] = exc.customer_message
        data["state"] = exc.state
    reason = getattr(exc, "reason", None)
    if isinstance(reason, str):
        data["reason"] = reason
    return data


@contextmanager
def exit_on_errors(*, json_output: bool, rerun_hint: str | None = None) -> Iterator[None]:
    """Turn the errors of a command into its message and documented exit code.

    `rerun_hint` is printed after Ctrl-C (e.g. "rerun the same command to continue").
    """
    try:
        yield
    except click.exceptions.Exit:
        raise
    except click.ClickException:
        raise
    except KeyboardInterrupt:
        hint = f"; {rerun_hint}" if rerun_hint else ""
        click.echo(f"\ninterrupted{hint}", err=True)
        raise click.exceptions.Exit(EXIT_INTERRUPTED) from None
    except Exception as exc:
        code = exit_code_for(exc)
        # The traceback only with --verbose; the redacting log filter cleans it.
        logging.getLogger("odoo_upgrade.cli").debug("error details", exc_info=True)
        for line in error_lines(exc):
            click.echo(redact(line), err=True)
        if json_output:
            click.echo(redact(json.dumps(error_json(exc, code), sort_keys=True)))
        raise click.exceptions.Exit(code) from None
