"""The `upgrade/request` client's pure parts: where calls go, and how answers become results
or exceptions (no network needed)."""

from __future__ import annotations

import json
import logging

import pytest

from odoo_upgrade.platform.client import platform_surely_did_not_act
from odoo_upgrade.platform.errors import (
    PlatformFailure,
    PlatformProtocolError,
    PlatformServerError,
    PlatformUnavailable,
)
from odoo_upgrade.platform.upgrade_request import (
    CreatedRequest,
    RequestStatus,
    TransferWindow,
    checked_assigned_host,
    checked_platform_url,
    host_of,
    jsonrpc_envelope,
    parse_jsonrpc_answer,
    request_base_url,
)
from odoo_upgrade.redact import redact

NONE: frozenset[str] = frozenset()


def body(data: object) -> bytes:
    return json.dumps(data).encode()


def test_calls_go_to_the_base_until_a_host_is_assigned_then_to_it_in_https() -> None:
    base = "https://upgrade.odoo.com/"
    assert request_base_url(base, None, NONE) == "https://upgrade.odoo.com"
    assert request_base_url(base, "upgrade-p7.odoo.com", NONE) == "https://upgrade-p7.odoo.com"
    assert request_base_url(base, "Host.Example:8443", NONE) == "https://host.example:8443"
    assert request_base_url(base, "[::1]:8443", NONE) == "https://[::1]:8443"


def test_plain_http_only_for_hosts_the_caller_listed() -> None:
    allowed = frozenset({"127.0.0.1:8080", "localhost:8080"})
    assert request_base_url("http://127.0.0.1:8080", None, allowed) == "http://127.0.0.1:8080"
    assert request_base_url("http://127.0.0.1:8080", "localhost:8080", allowed) == (
        "http://localhost:8080"
    )
    assert request_base_url("http://127.0.0.1:8080", "localhost:9999", allowed) == (
        "https://localhost:9999"
    )
    with pytest.raises(ValueError, match="only https is allowed"):
        checked_platform_url("http://127.0.0.1:9090", allowed)
    with pytest.raises(ValueError, match="must start with https://"):
        checked_platform_url("ftp://upgrade.odoo.com", NONE)
    with pytest.raises(ValueError, match="user info"):
        checked_platform_url("https://user:pw@upgrade.odoo.com", NONE)


@pytest.mark.parametrize(
    "value",
    ["https://evil.example", "evil.example/path", "user@evil.example", "evil:0", "evil:70000", ""],
)
def test_assigned_host_must_be_a_bare_host_and_port(value: str) -> None:
    with pytest.raises(PlatformProtocolError, match="bare host"):
        checked_assigned_host(value)


def test_ssh_dials_the_host_name_of_the_assigned_host() -> None:
    assert host_of("upgrade-p7.odoo.com") == "upgrade-p7.odoo.com"
    assert host_of("127.0.0.1:8080") == "127.0.0.1"
    assert host_of("[::1]:8080") == "::1"


def test_envelope_is_json_rpc_2() -> None:
    assert jsonrpc_envelope({"token": "t"}) == {
        "jsonrpc": "2.0",
        "method": "not_used",
        "params": {"token": "t"},
        "id": "not_used",
    }


def test_result_is_returned_and_result_error_is_a_permanent_refusal() -> None:
    assert parse_jsonrpc_answer("status", 200, body({"result": {"status": "new"}})) == {
        "status": "new"
    }
    with pytest.raises(PlatformFailure) as refused:
        parse_jsonrpc_answer("create", 200, body({"result": {"error": "Invalid contract"}}))
    assert refused.value.failures[0].reason == "REQUEST:ERROR"
    assert refused.value.failures[0].message == "Invalid contract"
    assert not refused.value.transient
    assert not platform_surely_did_not_act(refused.value)


def test_json_rpc_error_object_gives_its_data_message() -> None:
    answer = {
        "jsonrpc": "2.0",
        "error": {
            "code": 200,
            "message": "Odoo Server Error",
            "data": {"name": "odoo.exceptions.AccessDenied", "message": "Bad token"},
        },
    }
    with pytest.raises(PlatformFailure) as refused:
        parse_jsonrpc_answer("status", 200, body(answer))
    failure = refused.value.failures[0]
    assert (failure.reason, failure.message, failure.code, failure.value) == (
        "JSONRPC:ERROR",
        "Bad token",
        "200",
        "odoo.exceptions.AccessDenied",
    )


@pytest.mark.parametrize("status", [503, 429])
def test_503_and_429_say_the_platform_did_not_act(status: int) -> None:
    with pytest.raises(PlatformServerError) as error:
        parse_jsonrpc_answer("create", status, b"busy")
    assert error.value.transient and platform_surely_did_not_act(error.value)


@pytest.mark.parametrize("status", [500, 502, 504])
def test_other_5xx_leave_the_outcome_open(status: int) -> None:
    with pytest.raises(PlatformUnavailable) as error:
        parse_jsonrpc_answer("create", status, body({"result": {"request_id": 1}}))
    assert error.value.transient
    assert not platform_surely_did_not_act(error.value)


@pytest.mark.parametrize(
    ("status", "payload"),
    [(200, b"<html>"), (200, body([1, 2])), (200, body({"jsonrpc": "2.0"})), (404, body({}))],
)
def test_anything_else_is_a_protocol_error(status: int, payload: bytes) -> None:
    with pytest.raises(PlatformProtocolError):
        parse_jsonrpc_answer("status", status, payload)


def test_created_request_keeps_the_token_out_of_its_repr_and_registers_it() -> None:
    created = CreatedRequest.from_result(
        {"request_id": 42, "token": "tok-3f9a8b7c6d5e", "assigned_host_uri": "p7.odoo.com"}
    )
    assert created.request_id == 42 and created.assigned_host_uri == "p7.odoo.com"
    assert "tok-3f9a8b7c6d5e" not in repr(created)
    assert redact("token=tok-3f9a8b7c6d5e!") == "token=***!"
    with pytest.raises(PlatformProtocolError, match="token"):
        CreatedRequest.from_result({"request_id": 42, "assigned_host_uri": "p7.odoo.com"})


def test_unknown_states_count_as_in_progress_and_are_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    status = RequestStatus.from_result({"status": "queued", "host_uri": "p7.odoo.com"})
    assert status.in_progress and not status.succeeded
    assert "unknown state 'queued'" in caplog.text
    for final in ("done", "failed", "cancelled"):
        assert not RequestStatus.from_result({"status": final}).in_progress
    failed = RequestStatus.from_result({"status": "failed", "reason": "boom", "archived": True})
    assert failed.public_view() == {"status": "failed", "archived": True, "reason": "boom"}


def test_transfer_window_reads_ports_known_hosts_and_dump_name() -> None:
    window = TransferWindow.from_result(
        "download", {"ssh_port": "40022", "known_hosts": ["h ssh-ed25519 AAAA", ""]}
    )
    assert window == TransferWindow(40022, "h ssh-ed25519 AAAA\n", "upgraded.dump")
    upload = TransferWindow.from_result("upload", {"ssh_port": 2, "known_hosts": "h k b\n"})
    assert upload.dump_name is None
    for bad in ("../etc", "a/b", ".hidden", "-rf"):
        with pytest.raises(PlatformProtocolError, match="dump_name"):
            TransferWindow.from_result(
                "download", {"ssh_port": 2, "known_hosts": "h k b", "dump_name": bad}
            )
    with pytest.raises(PlatformProtocolError, match="ssh_port"):
        TransferWindow.from_result("upload", {"ssh_port": 70000, "known_hosts": "h k b"})
