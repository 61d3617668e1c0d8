"""The request key and the contract never show in exception text or in logs."""

from __future__ import annotations

import logging
import traceback
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from odoo_upgrade.platform import PlatformClient, RetryPolicy
from odoo_upgrade.transfer import download_https, generate_ssh_keypair, upload_https
from tests.support.emulator import RunningEmulator, write_sample_dump

FAST = RetryPolicy(attempts=2, base_delay=0.01, max_delay=0.02)
CONTRACT = "M424242-secretcontract"


def full_text(exc: BaseException) -> str:
    """Everything a log line with exc_info would show: message, repr and traceback."""
    return f"{exc}\n{exc!r}\n" + "".join(traceback.format_exception(exc))


async def failure_text(call: Awaitable[object]) -> str:
    try:
        await call
    except Exception as exc:
        return full_text(exc)
    raise AssertionError("the call was expected to fail")


async def test_key_and_contract_stay_out_of_errors_and_logs(
    make_emulator: Callable[..., RunningEmulator],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    emulator = make_emulator(contracts=[CONTRACT], process_seconds=0, drop_after_bytes=20_000)
    dump = write_sample_dump(tmp_path / "db.dump", size=64 * 1024)
    texts: list[str] = []
    async with PlatformClient(emulator.url, retry=FAST) as client:
        request = await client.create(
            contract=CONTRACT, email="a@b.c", target="18.0", aim="test", filename="db.dump"
        )
        key = request.key
        await upload_https(emulator.url, request.id, key, dump, retry=FAST)  # cut, then resent
        await client.process(request.id, key)
        done = await client.status(request.id, key)
        url = str(done.upgraded_dump_url)
        texts.append(
            await failure_text(
                client.create(
                    contract="M000000-notacontract",
                    email="a@b.c",
                    target="18.0",
                    aim="test",
                    filename="db.dump",
                )
            )
        )

        emulator.restart(fail_rate=1.0)
        texts.append(await failure_text(client.status(request.id, key)))
        texts.append(await failure_text(client.process(request.id, key)))
        ssh_keys = generate_ssh_keypair().public_line
        texts.append(await failure_text(client.request_sftp_access(request.id, key, ssh_keys)))
        texts.append(
            await failure_text(upload_https(emulator.url, request.id, key, dump, retry=FAST))
        )

        emulator.stop()
        texts.append(await failure_text(client.status(request.id, key)))
        texts.append(await failure_text(client.request_sftp_access(request.id, key, ssh_keys)))
        texts.append(
            await failure_text(upload_https(emulator.url, request.id, key, dump, retry=FAST))
        )
        texts.append(await failure_text(download_https(url, tmp_path / "out.zip", retry=FAST)))

    assert key in url  # the test would prove nothing if the key were not in play
    assert any(r.name == "odoo_upgrade.platform" for r in caplog.records)
    assert "key=***" in caplog.text  # httpx logged key-bearing URLs, redacted at the source
    for text in [*texts, caplog.text]:
        assert key not in text
        assert CONTRACT not in text
        assert "M000000-notacontract" not in text
