"""Fault injection: SERVER:ERROR answers, connections cut once, slow answers."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.emulator import sample_dump_bytes


def test_fail_rate_one_answers_server_error_and_creates_nothing(make_emulator: Any) -> None:
    emu = make_emulator(fail_rate=1.0)
    response = httpx.get(
        emu.method_url("create"),
        params={"contract": emu.contract, "email": "a@example.com", "target": "18.0",
                "aim": "test", "filename": "db.dump"},
    )  # fmt: skip
    assert response.status_code == 503
    assert response.json() == {
        "failures": [{"reason": "SERVER:ERROR", "message": "The server is temporarily unavailable"}]
    }
    assert not any((emu.data_dir / "requests").iterdir())
    assert emu.calls("create")[0]["ok"] is False


def test_fail_rate_fails_a_fraction_of_calls_reproducibly(make_emulator: Any) -> None:
    outcomes = []
    for _ in range(2):
        emu = make_emulator(fail_rate=0.5, fault_seed=7)
        outcomes.append(
            [emu.api("status", request=1, key="k")["failures"][0]["reason"] for _ in range(20)]
        )
    assert outcomes[0] == outcomes[1]
    assert {"SERVER:ERROR", "REQUEST:NOT_FOUND"} == set(outcomes[0])


def test_latency_delays_answers_past_a_short_client_timeout(make_emulator: Any) -> None:
    emu = make_emulator(latency=2.0)
    with pytest.raises(httpx.ReadTimeout):
        httpx.get(emu.method_url("status"), params={"request": 1, "key": "k"}, timeout=0.1)
    patient = httpx.get(emu.method_url("status"), params={"request": 1, "key": "k"}, timeout=30)
    assert patient.json()["failures"][0]["reason"] == "REQUEST:NOT_FOUND"


def test_upload_is_cut_once_and_the_partial_body_discarded(make_emulator: Any) -> None:
    emu = make_emulator(drop_after_bytes=100_000)
    request = emu.create_request()
    body = sample_dump_bytes("sql", size=400_000)
    url = emu.method_url("upload")
    params = {"request": request["id"], "key": request["key"]}
    with pytest.raises(httpx.TransportError):
        httpx.post(url, params=params, content=body)
    assert not emu.original_path(request["id"]).exists()
    assert not list(emu.original_path(request["id"]).parent.glob("*.part"))
    retried = httpx.post(url, params=params, content=body)
    assert retried.json()["failures"] == []
    assert emu.original_path(request["id"]).read_bytes() == body


def test_download_is_cut_once_then_resumes_with_range(make_emulator: Any, tmp_path: Path) -> None:
    emu = make_emulator(process_seconds=0, drop_after_bytes=50_000)
    request = emu.create_request()
    dump = sample_dump_bytes("sql", size=80_000)
    with pytest.raises(OSError):  # the upload's own cut
        emu.upload(request["id"], request["key"], dump)
    assert emu.upload(request["id"], request["key"], dump)["failures"] == []
    emu.api("process", request=request["id"], key=request["key"])
    done = emu.wait_for_state(request["id"], request["key"], "done")
    target = tmp_path / "upgraded.zip"
    first = subprocess.run(
        ["curl", "-sS", "-o", str(target), done["upgraded_dump_url"]], capture_output=True
    )
    assert first.returncode != 0
    assert target.stat().st_size == 50_000
    resumed = subprocess.run(
        ["curl", "-sS", "-C", "-", "-o", str(target), done["upgraded_dump_url"]],
        capture_output=True,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert target.read_bytes() == emu.upgraded_bytes(request["id"])
