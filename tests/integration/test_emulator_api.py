"""The emulator's v1 methods over real HTTP: parameters, answers, failures, states."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from tests.support.emulator import RunningEmulator, sample_dump_bytes

REQUEST_KEYS = [
    "id", "key", "email", "target", "aim", "filename", "timezone", "state", "issue_stage",
    "issue", "status_url", "notes_url", "original_sql_url", "original_dump_url",
    "upgraded_sql_url", "upgraded_dump_url", "modules_url", "filesize", "database_uuid",
    "created_at", "estimated_time", "processed_at", "elapsed", "filestore", "customer_message",
    "database_version", "postgresql", "compressions",
]  # fmt: skip


def create_params(emu: RunningEmulator, **overrides: str) -> dict[str, str]:
    return {
        "contract": emu.contract,
        "email": "john.doe@example.com",
        "target": "18.0",
        "aim": "test",
        "filename": "db_name.dump",
        **overrides,
    }


def created(emu: RunningEmulator) -> dict[str, Any]:
    return emu.create_request()


def uploaded(emu: RunningEmulator, kind: str = "sql") -> dict[str, Any]:
    request = emu.create_request()
    answer = emu.upload(request["id"], request["key"], sample_dump_bytes(kind, size=8192))
    assert answer["failures"] == []
    return request


@pytest.mark.parametrize(
    "send",
    [
        pytest.param(lambda url, p: httpx.get(url, params=p), id="GET query string"),
        pytest.param(lambda url, p: httpx.post(url, params=p), id="POST query string"),
        pytest.param(lambda url, p: httpx.post(url, data=p), id="POST urlencoded"),
        pytest.param(
            lambda url, p: httpx.post(url, files={k: (None, v) for k, v in p.items()}),
            id="POST multipart",
        ),
    ],
)
def test_create_accepts_parameters_in_every_encoding(
    shared_emulator: RunningEmulator, send: Any
) -> None:
    response = send(shared_emulator.method_url("create"), create_params(shared_emulator))
    answer = response.json()
    assert answer["failures"] == []
    request = answer["request"]
    assert list(request) == REQUEST_KEYS
    assert request["state"] == "draft"
    assert request["filename"] == "db_name.dump"
    assert isinstance(request["id"], int)
    assert request["status_url"] == (
        f"{shared_emulator.url}/database/eu1/{request['id']}/{request['key']}/status"
    )


def test_create_answers_target_invalid_with_value_and_expected(
    shared_emulator: RunningEmulator,
) -> None:
    answer = shared_emulator.api("create", **create_params(shared_emulator, target="5.0"))
    assert "request" not in answer
    (failure,) = answer["failures"]
    assert failure["reason"] == "TARGET:INVALID"
    assert failure["value"] == "5.0"
    assert failure["expected"][:4] == ["6.0", "6.1", "7.0", "8.0"]
    assert "19.0" in failure["expected"]


def test_create_answers_contract_not_found_with_code(shared_emulator: RunningEmulator) -> None:
    answer = shared_emulator.api(
        "create", **create_params(shared_emulator, contract="M123456-abcxyz")
    )
    assert answer["failures"] == [
        {
            "reason": "CONTRACT:NOT_FOUND",
            "message": "Can not find contract M123456-abcxyz",
            "code": "M123456-abcxyz",
        }
    ]


def test_create_lists_every_failure_at_once_and_creates_nothing(
    shared_emulator: RunningEmulator,
) -> None:
    before = sorted((shared_emulator.data_dir / "requests").iterdir())
    answer = shared_emulator.api(
        "create", **create_params(shared_emulator, target="5.0", contract="M123456-abcxyz")
    )
    assert [f["reason"] for f in answer["failures"]] == ["TARGET:INVALID", "CONTRACT:NOT_FOUND"]
    assert sorted((shared_emulator.data_dir / "requests").iterdir()) == before


def test_create_names_missing_and_invalid_parameters(shared_emulator: RunningEmulator) -> None:
    answer = shared_emulator.api(
        "create", contract=shared_emulator.contract, target="18.0", aim="staging"
    )
    reasons = {(f["reason"], f.get("value")) for f in answer["failures"]}
    assert ("PARAM:MISSING", "email") in reasons
    assert ("PARAM:MISSING", "filename") in reasons
    assert ("AIM:INVALID", "staging") in reasons


def test_targets_and_contracts_follow_the_flags(make_emulator: Any) -> None:
    emu = make_emulator(contracts=["C-ONE", "C-TWO"], targets="17.0,saas~17.2")
    assert (
        emu.api("create", **create_params(emu, contract="C-TWO", target="saas~17.2"))["failures"]
        == []
    )
    answer = emu.api("create", **create_params(emu, contract="M123456-abcdef", target="18.0"))
    assert {f["reason"] for f in answer["failures"]} == {"CONTRACT:NOT_FOUND", "TARGET:INVALID"}
    target_failure = next(f for f in answer["failures"] if f["reason"] == "TARGET:INVALID")
    assert target_failure["expected"] == ["17.0", "saas~17.2"]


@pytest.mark.parametrize("method", ["status", "process", "skip_test", "upload"])
def test_wrong_key_and_unknown_id_are_refused_identically(
    shared_emulator: RunningEmulator, method: str
) -> None:
    request = created(shared_emulator)
    wrong_key = shared_emulator.api(method, http_method="POST", request=request["id"], key="x" * 24)
    unknown_id = shared_emulator.api(method, http_method="POST", request=999999, key=request["key"])
    assert wrong_key == unknown_id
    assert wrong_key["failures"][0]["reason"] == "REQUEST:NOT_FOUND"
    assert "request" not in wrong_key
    assert request["key"] not in str(wrong_key)


def test_key_bearing_urls_refuse_a_wrong_key_like_an_unknown_id(
    shared_emulator: RunningEmulator,
) -> None:
    request = created(shared_emulator)
    wrong_key = httpx.get(f"{shared_emulator.url}/database/eu1/{request['id']}/{'x' * 24}/status")
    unknown_id = httpx.get(f"{shared_emulator.url}/database/eu1/99999/{request['key']}/status")
    assert wrong_key.status_code == unknown_id.status_code == 404
    assert wrong_key.json() == unknown_id.json()


def test_status_reports_the_upload(shared_emulator: RunningEmulator) -> None:
    request = uploaded(shared_emulator, "sql")
    status = shared_emulator.api("status", request=request["id"], key=request["key"])["request"]
    assert status["state"] == "draft"
    assert status["filesize"] == "8.00 Kb"
    assert status["created_at"][4] == "-" and len(status["created_at"]) == 19


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({"Content-Type": "application/octet-stream"}, id="octet-stream"),
        pytest.param({}, id="no content type"),
        pytest.param({"Content-Type": "application/x-www-form-urlencoded"}, id="form type"),
    ],
)
def test_upload_stores_the_raw_body_whatever_its_content_type(
    shared_emulator: RunningEmulator, headers: dict[str, str]
) -> None:
    request = created(shared_emulator)
    # Looks like a form on purpose: it must still be stored byte for byte.
    body = b"key=abc&request=1\n" + sample_dump_bytes("sql", size=4096)
    response = httpx.post(
        shared_emulator.method_url("upload"),
        params={"request": request["id"], "key": request["key"]},
        content=body,
        headers=headers,
    )
    assert response.json()["failures"] == []
    assert shared_emulator.original_path(request["id"]).read_bytes() == body


def test_process_without_upload_is_refused(shared_emulator: RunningEmulator) -> None:
    request = created(shared_emulator)
    answer = shared_emulator.api("process", request=request["id"], key=request["key"])
    assert answer["failures"][0]["reason"] == "FILE:MISSING"
    status = shared_emulator.api("status", request=request["id"], key=request["key"])["request"]
    assert status["state"] == "draft"


def test_states_go_from_draft_to_done(make_emulator: Any) -> None:
    emu = make_emulator(process_seconds=2)
    request = uploaded(emu, "pgdmp")
    answer = emu.api("process", request=request["id"], key=request["key"])
    assert answer["failures"] == []
    assert answer["request"]["state"] == "pending"
    final = emu.wait_for_state(request["id"], request["key"], "done")
    assert final["state"] == "done"
    assert final["processed_at"] is not None
    assert final["database_uuid"] is not None


def test_states_pass_through_processing_and_testing(make_emulator: Any) -> None:
    emu = make_emulator(process_seconds=3)
    request = uploaded(emu, "sql")
    emu.api("process", request=request["id"], key=request["key"])
    states = []
    while not states or states[-1] != "done":
        state = emu.api("status", request=request["id"], key=request["key"])["request"]["state"]
        if not states or states[-1] != state:
            states.append(state)
        time.sleep(0.05)
    assert states[0] == "pending"
    assert states[-1] == "done"
    assert set(states) <= {"pending", "processing", "testing", "done"}
    assert "testing" in states


def test_process_twice_is_harmless(shared_emulator: RunningEmulator) -> None:
    request = uploaded(shared_emulator)
    first = shared_emulator.api("process", request=request["id"], key=request["key"])
    second = shared_emulator.api("process", request=request["id"], key=request["key"])
    assert first["failures"] == second["failures"] == []


def test_upload_after_process_is_refused(shared_emulator: RunningEmulator) -> None:
    request = uploaded(shared_emulator)
    shared_emulator.api("process", request=request["id"], key=request["key"])
    answer = shared_emulator.upload(request["id"], request["key"], b"-- another dump\n")
    assert answer["failures"][0]["reason"] == "STATE:INVALID"
    assert answer["failures"][0]["expected"] == ["draft"]


def test_garbage_upload_ends_invalid_with_a_customer_message(
    shared_emulator: RunningEmulator,
) -> None:
    request = shared_emulator.create_request()
    shared_emulator.upload(request["id"], request["key"], bytes(range(256)) * 64)
    shared_emulator.api("process", request=request["id"], key=request["key"])
    final = shared_emulator.wait_for_state(request["id"], request["key"], "invalid", "done")
    assert final["state"] == "invalid"
    assert "not a valid database dump" in final["customer_message"]


@pytest.mark.parametrize(
    ("kind", "compressions", "filestore"),
    [
        ("pgdmp", ["pgdmp_custom"], False),
        ("sql", ["sql"], False),
        ("zip", ["zip", "sql"], True),
        ("gzip", ["gzip", "sql"], False),
    ],
)
def test_format_and_versions_are_guessed_from_the_dump(
    shared_emulator: RunningEmulator, kind: str, compressions: list[str], filestore: bool
) -> None:
    emu = shared_emulator
    request = emu.create_request()
    dump = sample_dump_bytes(kind, size=4096, odoo_version="15.0", pg_version="13.4")
    emu.upload(request["id"], request["key"], dump)
    emu.api("process", request=request["id"], key=request["key"])
    final = emu.wait_for_state(request["id"], request["key"], "done", "invalid")
    assert final["state"] == "done"
    assert final["compressions"] == compressions
    assert final["database_version"] == "15.0"
    assert final["postgresql"] == "13"
    assert final["filestore"] is filestore


def test_skip_test_delivers_a_done_request(shared_emulator: RunningEmulator) -> None:
    emu = shared_emulator
    request = uploaded(emu)
    emu.api("process", request=request["id"], key=request["key"])
    emu.wait_for_state(request["id"], request["key"], "done")
    answer = emu.api("skip_test", request=request["id"], key=request["key"])
    assert answer["failures"] == []
    assert answer["request"]["state"] == "delivered"


def test_skip_test_is_refused_in_draft(shared_emulator: RunningEmulator) -> None:
    request = created(shared_emulator)
    answer = shared_emulator.api("skip_test", request=request["id"], key=request["key"])
    assert answer["failures"][0]["reason"] == "STATE:INVALID"


def test_request_sftp_access_takes_keys_as_a_multipart_file(
    shared_emulator: RunningEmulator,
) -> None:
    request = created(shared_emulator)
    keys = "# ops laptop\n\nssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHRlc3Rrzl0 ops@example\n"
    response = httpx.post(
        shared_emulator.method_url("request_sftp_access"),
        params={"request": request["id"], "key": request["key"]},
        files={"ssh_keys": ("authorized_keys", keys.encode(), "text/plain")},
    )
    answer = response.json()
    assert answer["failures"] == []
    assert answer["request"] == {
        "hostname": "127.0.0.1",
        "sftp_port": shared_emulator.sftp_port,
        "sftp_user": f"user_{request['id']}",
        "shared_file": "db_name.dump",
        "request_id": request["id"],
        "sample_command": f"sftp -P {shared_emulator.sftp_port} user_{request['id']}@127.0.0.1",
    }


def test_request_sftp_access_names_the_line_that_is_not_a_key(
    shared_emulator: RunningEmulator,
) -> None:
    request = created(shared_emulator)
    answer = shared_emulator.api(
        "request_sftp_access",
        http_method="POST",
        request=request["id"],
        key=request["key"],
        ssh_keys="# comment\nnot a key\n",
    )
    assert answer["failures"][0]["reason"] == "SSH_KEYS:INVALID"
    assert answer["failures"][0]["value"] == "2"


def test_public_url_is_the_base_of_returned_urls(make_emulator: Any) -> None:
    emu = make_emulator(public_url="https://upgrade.example.test")
    request = emu.create_request()
    assert request["upgraded_dump_url"].startswith(
        f"https://upgrade.example.test/database/eu1/{request['id']}/"
    )
    access = emu.api(
        "request_sftp_access",
        request=request["id"],
        key=request["key"],
        ssh_keys="ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHRlc3Rrzl0",
    )["request"]
    assert access["hostname"] == "upgrade.example.test"


def test_calls_are_logged_without_key_or_contract(shared_emulator: RunningEmulator) -> None:
    request = uploaded(shared_emulator)
    shared_emulator.api("status", request=request["id"], key=request["key"])
    mine = [c for c in shared_emulator.calls() if c["request"] == request["id"]]
    assert [c["method"] for c in mine] == ["create", "upload", "status"]
    recorded = (shared_emulator.data_dir / "calls.jsonl").read_text() + shared_emulator.log()
    assert request["key"] not in recorded
    assert shared_emulator.contract not in recorded


def test_requests_survive_a_restart_mid_processing(make_emulator: Any) -> None:
    emu = make_emulator(process_seconds=2)
    request = uploaded(emu, "pgdmp")
    emu.api("process", request=request["id"], key=request["key"])
    emu.restart()
    status = emu.api("status", request=request["id"], key=request["key"])["request"]
    assert status["state"] in ("pending", "processing", "testing", "done")
    final = emu.wait_for_state(request["id"], request["key"], "done")
    assert final["state"] == "done"
    assert final["compressions"] == ["pgdmp_custom"]
    # A new request after the restart gets a new id.
    assert emu.create_request()["id"] == request["id"] + 1


@pytest.mark.parametrize(
    "send",
    [
        pytest.param(lambda url, p: httpx.get(url, params=p), id="GET query string"),
        pytest.param(lambda url, p: httpx.post(url, data=p), id="POST urlencoded"),
        pytest.param(
            lambda url, p: httpx.post(url, files={k: (None, str(v)) for k, v in p.items()}),
            id="POST multipart",
        ),
        pytest.param(
            lambda url, p: httpx.post(
                url, params={"request": p["request"]}, data={"key": p["key"]}
            ),
            id="POST query string and body mixed",
        ),
    ],
)
@pytest.mark.parametrize("method", ["status", "process", "skip_test"])
def test_request_methods_accept_parameters_in_every_encoding(
    shared_emulator: RunningEmulator, send: Any, method: str
) -> None:
    request = uploaded(shared_emulator)
    if method == "skip_test":
        shared_emulator.api("process", request=request["id"], key=request["key"])
        shared_emulator.wait_for_state(request["id"], request["key"], "done")
    answer = send(
        shared_emulator.method_url(method), {"request": request["id"], "key": request["key"]}
    ).json()
    assert answer["failures"] == []
    assert answer["request"]["id"] == request["id"]


def test_requests_survive_a_crash_mid_processing(make_emulator: Any) -> None:
    emu = make_emulator(process_seconds=2)
    request = uploaded(emu, "zip")
    emu.api("process", request=request["id"], key=request["key"])
    emu.kill()
    emu.start()
    final = emu.wait_for_state(request["id"], request["key"], "done")
    assert final["state"] == "done"
    assert final["compressions"] == ["zip", "sql"]
    assert httpx.get(final["upgraded_dump_url"]).content == emu.upgraded_bytes(request["id"])
