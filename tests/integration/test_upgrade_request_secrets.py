"""The request token, the contract and the SSH private key stay out of every log, record and
exception text of an `upgrade/request` run, cut transfers and failures included."""

from __future__ import annotations

import dataclasses
import logging
import tempfile
import traceback
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from odoo_upgrade.platform import RetryPolicy, UpgradeRequestClient
from odoo_upgrade.transfer import (
    RsyncEndpoint,
    download_rsync,
    generate_ssh_keypair,
    upload_rsync,
)
from tests.support.emulator import RunningEmulator, sample_dump_bytes
from tests.support.upgrade_request import create_request, request_client, upload, wait_for_status

CONTRACT = "M424242-requestapisecret"


def full_text(exc: BaseException) -> str:
    """Everything a log line with exc_info would show: message, repr and traceback."""
    return f"{exc}\n{exc!r}\n" + "".join(traceback.format_exception(exc))


async def failure_text(call: Awaitable[object]) -> str:
    try:
        await call
    except Exception as exc:
        return full_text(exc)
    raise AssertionError("the call was expected to fail")


def leftover_key_dirs() -> set[Path]:
    return set(Path(tempfile.gettempdir()).glob("odoo-upgrade-ssh-*"))


async def test_token_contract_and_key_stay_out_of_logs_records_and_errors(
    make_emulator: Callable[..., RunningEmulator],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    key_dirs_before = leftover_key_dirs()
    emu = make_emulator(contracts=[CONTRACT], process_seconds=0.5, drop_after_bytes=200_000)
    keys = generate_ssh_keypair()
    dump = tmp_path / "db.sql"
    dump.write_bytes(sample_dump_bytes("sql", size=1_000_000))
    texts: list[str] = []
    async with request_client(emu) as client:
        created = await create_request(client, emu, keys, contract=CONTRACT)
        token = created.token
        texts.append(repr(created))
        sent = await upload(client, created, keys, dump)  # cut once, resumed
        await client.process(token)
        await wait_for_status(client, token, "done")
        texts.append(str(await client.status(token)))
        log_text, _ = await client.logs(token)
        texts.append(log_text)
        async with client.transfer_window(token, "download") as window:
            endpoint = RsyncEndpoint.for_window(client.request_host, window)
            forged = dataclasses.replace(
                endpoint, known_hosts=endpoint.known_hosts.replace("AAAA", "AAAB", 1)
            )
            texts.append(
                await failure_text(
                    download_rsync(
                        forged, keys.private_pem, tmp_path / "x", dump_name="upgraded.dump"
                    )
                )
            )
            got = await download_rsync(  # cut once, resumed
                endpoint, keys.private_pem, tmp_path / "out", dump_name="upgraded.dump"
            )
        texts.append(
            await failure_text(upload_rsync(endpoint, keys.private_pem, dump, max_attempts=1))
        )
        texts.append(await failure_text(client.wipe("M000000-notthecontract", token)))
        texts.append(
            await failure_text(
                create_request(client, emu, keys, contract="M000000-notacontractatall")
            )
        )
    async with UpgradeRequestClient(
        emu.url,
        assigned_host_uri="127.0.0.1:1",  # nothing listens there
        allow_insecure_hosts={emu.assigned_host, "127.0.0.1:1"},
        retry=RetryPolicy(attempts=2, base_delay=0.01),
    ) as dead:
        texts.append(await failure_text(dead.status(token)))
        texts.append(await failure_text(dead.logs(token, 10)))
        texts.append(await failure_text(dead.transfer_start(token, "download")))
    assert sent.attempts == 2 and got.attempts == 2

    body = [line for line in keys.private_pem.splitlines() if not line.startswith("-----")]
    private_lines = body[2:]  # the first two are a header every ed25519 key shares
    assert private_lines
    records = {
        "emulator log": emu.log(),
        "our logs": caplog.text,
        "exception texts": "\n".join(texts),
    }
    for path in emu.data_dir.rglob("*"):
        if path.is_file():
            records[str(path.relative_to(emu.data_dir))] = path.read_bytes().decode("latin-1")
    assert "calls.jsonl" in records and "upgrade/request/logs" in records["calls.jsonl"]
    for where, text in records.items():
        assert token not in text, f"token in {where}"
        assert CONTRACT not in text, f"contract in {where}"
        assert "M000000-notacontractatall" not in text, f"refused contract in {where}"
        for line in private_lines:
            assert line not in text, f"private key in {where}"
    assert "token=***" in caplog.text  # the logs URL was logged, redacted
    assert leftover_key_dirs() == key_dirs_before, "the temporary key directory must go"
