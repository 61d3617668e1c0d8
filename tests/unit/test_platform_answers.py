"""How platform answers and network errors become exceptions (no network needed)."""

from __future__ import annotations

import json

import httpx
import pytest

from odoo_upgrade.platform.client import (
    PlatformClient,
    is_transient,
    parse_answer,
    platform_surely_did_not_act,
    transport_error,
)
from odoo_upgrade.platform.errors import (
    PlatformFailure,
    PlatformNotReached,
    PlatformOutcomeUnknown,
    PlatformProtocolError,
    PlatformServerError,
    PlatformUnavailable,
)

TARGET_INVALID = {
    "reason": "TARGET:INVALID",
    "message": "Invalid target version",
    "value": "5.0",
    "expected": ["16.0", "17.0"],
}


def body(data: object) -> bytes:
    return json.dumps(data).encode()


def test_successful_answer_is_returned_as_a_dict() -> None:
    answer = parse_answer("status", 200, body({"failures": [], "request": {"id": 1}}))
    assert answer["request"] == {"id": 1}


def test_target_invalid_is_a_permanent_failure_keeping_value_and_expected() -> None:
    with pytest.raises(PlatformFailure) as caught:
        parse_answer("create", 200, body({"failures": [TARGET_INVALID]}))
    failure = caught.value.failures[0]
    assert (failure.reason, failure.value, failure.expected) == (
        "TARGET:INVALID",
        "5.0",
        ["16.0", "17.0"],
    )
    assert not caught.value.transient
    assert not is_transient(caught.value)
    assert "expected one of: 16.0, 17.0" in str(caught.value)


def test_contract_not_found_is_permanent_even_with_a_5xx_status() -> None:
    failure = {"reason": "CONTRACT:NOT_FOUND", "message": "unknown", "code": "M1"}
    with pytest.raises(PlatformFailure) as caught:
        parse_answer("create", 500, body({"failures": [failure]}))
    assert not caught.value.transient
    assert caught.value.failures[0].code == "M1"


def test_unknown_reason_is_permanent() -> None:
    with pytest.raises(PlatformFailure) as caught:
        parse_answer("process", 200, body({"failures": [{"reason": "NEW:THING", "message": ""}]}))
    assert not caught.value.transient


def test_server_error_reason_is_transient_and_safe_to_repeat_for_create() -> None:
    failure = {"reason": "SERVER:ERROR", "message": "try later"}
    with pytest.raises(PlatformFailure) as caught:
        parse_answer("create", 503, body({"failures": [failure]}))
    assert caught.value.transient
    assert platform_surely_did_not_act(caught.value)


@pytest.mark.parametrize("status", [500, 502, 503, 504, 429])
def test_5xx_without_failures_is_a_transient_server_error(status: int) -> None:
    with pytest.raises(PlatformServerError) as caught:
        parse_answer("status", status, b"<html>Bad Gateway</html>")
    assert caught.value.transient


@pytest.mark.parametrize("status", [503, 429])
def test_503_and_429_say_the_server_did_not_act_so_create_may_repeat(status: int) -> None:
    with pytest.raises(PlatformServerError) as caught:
        parse_answer("create", status, b"<html>Service Unavailable</html>")
    assert platform_surely_did_not_act(caught.value)


@pytest.mark.parametrize("status", [500, 502, 504])
def test_a_gateway_or_server_error_leaves_create_outcome_unknown(status: int) -> None:
    # A 502/504 gateway may have passed `create` on before the answer was lost.
    with pytest.raises(PlatformServerError) as caught:
        parse_answer("create", status, b"<html>Bad Gateway</html>")
    assert not platform_surely_did_not_act(caught.value)


def test_non_json_2xx_is_a_permanent_protocol_error() -> None:
    with pytest.raises(PlatformProtocolError) as caught:
        parse_answer("status", 200, b"<html>maintenance</html>")
    assert not caught.value.transient


def test_4xx_without_failures_is_a_protocol_error() -> None:
    with pytest.raises(PlatformProtocolError, match="HTTP 404"):
        parse_answer("status", 404, body({"error": "not found"}))


def test_connection_refused_never_reached_the_platform() -> None:
    error = transport_error("create", httpx.ConnectError("[Errno 111] Connection refused"))
    assert isinstance(error, PlatformNotReached)
    assert error.transient
    assert platform_surely_did_not_act(error)


@pytest.mark.parametrize(
    "exc",
    [
        httpx.ReadTimeout("timed out"),
        httpx.RemoteProtocolError("Server disconnected without sending a response."),
        httpx.ReadError("connection reset"),
    ],
)
def test_errors_after_sending_leave_create_outcome_unknown(exc: httpx.TransportError) -> None:
    error = transport_error("create", exc)
    assert is_transient(error)  # idempotent methods retry these
    assert not platform_surely_did_not_act(error)  # create must not


def test_outcome_unknown_is_a_platform_unavailable_that_is_not_retried() -> None:
    error = PlatformOutcomeUnknown("create: outcome unknown")
    assert isinstance(error, PlatformUnavailable)
    assert not is_transient(error)


def test_transport_error_text_never_carries_the_key() -> None:
    key = "Zz9-SecretKeyValue=="
    url = f"http://127.0.0.1:1/database/v1/upload?request=7&key={key}"
    error = transport_error("upload", httpx.ConnectError(f"cannot reach {url}"))
    assert key not in str(error)
    assert "key=***" in str(error)


def test_platform_url_without_scheme_is_refused_naming_the_expected_form() -> None:
    with pytest.raises(ValueError, match="https://"):
        PlatformClient("upgrade.odoo.com")
