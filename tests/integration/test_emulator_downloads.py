"""Key-bearing URLs: original and upgraded dumps and SQL, with HTTP Range."""

from __future__ import annotations

import io
import zipfile
from typing import Any

import httpx
import pytest

from tests.support.emulator import RunningEmulator, sample_dump_bytes


def done_request(emu: RunningEmulator, dump: bytes, target: str = "18.0") -> dict[str, Any]:
    request = emu.create_request(target=target)
    assert emu.upload(request["id"], request["key"], dump)["failures"] == []
    emu.api("process", request=request["id"], key=request["key"])
    final = emu.wait_for_state(request["id"], request["key"], "done")
    assert final["state"] == "done"
    return final


@pytest.fixture
def quick(shared_emulator: RunningEmulator) -> RunningEmulator:
    return shared_emulator


def test_upgraded_urls_answer_404_until_done(emulator: RunningEmulator) -> None:
    request = emulator.create_request()
    emulator.upload(request["id"], request["key"], sample_dump_bytes("sql", size=2048))
    for name in ("upgraded_dump_url", "upgraded_sql_url", "notes_url"):
        assert httpx.get(request[name]).status_code == 404


def test_original_dump_is_served_as_uploaded(quick: RunningEmulator) -> None:
    dump = sample_dump_bytes("pgdmp", size=50_000)
    request = done_request(quick, dump)
    response = httpx.get(request["original_dump_url"])
    assert response.status_code == 200
    assert response.headers["Accept-Ranges"] == "bytes"
    assert response.content == dump


def test_upgraded_archive_is_a_zip_holding_the_upgraded_sql(quick: RunningEmulator) -> None:
    dump = sample_dump_bytes("sql", size=20_000)
    request = done_request(quick, dump)
    archive = httpx.get(request["upgraded_dump_url"]).content
    sql = httpx.get(request["upgraded_sql_url"]).content
    assert archive == quick.upgraded_bytes(request["id"])
    with zipfile.ZipFile(io.BytesIO(archive)) as unpacked:
        assert unpacked.read("dump.sql") == sql
    assert b"-- Odoo version 18.0" in sql[:200]
    assert sql.endswith(dump)
    assert sql != dump


def test_upgrade_is_a_deterministic_function_of_dump_and_target(quick: RunningEmulator) -> None:
    dump = sample_dump_bytes("gzip", size=10_000)
    first = httpx.get(done_request(quick, dump)["upgraded_dump_url"]).content
    again = httpx.get(done_request(quick, dump)["upgraded_dump_url"]).content
    other_target = httpx.get(done_request(quick, dump, "17.0")["upgraded_dump_url"]).content
    assert first == again
    assert first != other_target
    assert first != dump


def test_range_requests_answer_206_with_the_asked_bytes(quick: RunningEmulator) -> None:
    request = done_request(quick, sample_dump_bytes("sql", size=30_000))
    whole = quick.upgraded_bytes(request["id"])
    url = request["upgraded_dump_url"]
    middle = httpx.get(url, headers={"Range": "bytes=1000-1999"})
    assert middle.status_code == 206
    assert middle.headers["Content-Range"] == f"bytes 1000-1999/{len(whole)}"
    assert middle.content == whole[1000:2000]
    tail = httpx.get(url, headers={"Range": "bytes=25000-"})
    assert tail.status_code == 206
    assert tail.content == whole[25000:]
    suffix = httpx.get(url, headers={"Range": "bytes=-10"})
    assert suffix.content == whole[-10:]


def test_range_past_the_end_answers_416(quick: RunningEmulator) -> None:
    request = done_request(quick, sample_dump_bytes("sql", size=1000))
    size = len(quick.upgraded_bytes(request["id"]))
    response = httpx.get(request["upgraded_dump_url"], headers={"Range": f"bytes={size}-"})
    assert response.status_code == 416
    assert response.headers["Content-Range"] == f"bytes */{size}"


def test_range_on_the_upgraded_sql_stream(quick: RunningEmulator) -> None:
    request = done_request(quick, sample_dump_bytes("zip", size=8000))
    sql = quick.upgraded_sql_bytes(request["id"])
    response = httpx.get(request["upgraded_sql_url"], headers={"Range": "bytes=10-99"})
    assert response.status_code == 206
    assert response.content == sql[10:100]


def test_head_gives_the_size_without_a_body(quick: RunningEmulator) -> None:
    request = done_request(quick, sample_dump_bytes("sql", size=5000))
    response = httpx.head(request["upgraded_dump_url"])
    assert response.status_code == 200
    assert int(response.headers["Content-Length"]) == len(quick.upgraded_bytes(request["id"]))
    assert response.content == b""


def test_downloads_are_still_served_after_skip_test(quick: RunningEmulator) -> None:
    request = done_request(quick, sample_dump_bytes("sql", size=5000))
    quick.api("skip_test", request=request["id"], key=request["key"])
    assert httpx.get(request["upgraded_dump_url"]).content == quick.upgraded_bytes(request["id"])
