"""A published dump is only ever its own request's bytes, and finishing is idempotent.

Against the emulator over real HTTP (through a recording proxy, to see what was asked and
answered) and real SFTP.
"""

from __future__ import annotations

import asyncio
import hashlib
import http.client
import http.server
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from odoo_upgrade.platform import PlatformClient, RetryPolicy, SftpAccess
from odoo_upgrade.transfer import (
    DestinationExists,
    DownloadBinding,
    HostKeyCheck,
    SshKeyPair,
    TransferResult,
    TransferUnavailable,
    download_https,
    download_sftp,
    generate_ssh_keypair,
    published_download,
    upload_https,
)
from odoo_upgrade.transfer.binding import origin_path
from odoo_upgrade.transfer.openssh_sftp import UNSETTLED
from odoo_upgrade.transfer.part_file import checksum_path, part_path
from tests.support.emulator import RunningEmulator, write_sample_dump

REPO = Path(__file__).resolve().parents[2]
FAST = RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.05)
DUMP_SIZE = 256 * 1024


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class Exchange:
    """One request through the proxy and what came back."""

    range: str | None
    if_range: str | None
    status: int
    etag: str | None
    body_bytes: int


class RecordingProxy:
    """A plain-HTTP proxy (set as HTTP_PROXY) that forwards GETs and records each exchange.

    With `cut_after`, it cuts the first answer after that many body bytes and answers 503 to
    every later request: the download gives up and leaves its part, as a killed mover would.
    """

    def __init__(self, cut_after: int | None = None) -> None:
        self.exchanges: list[Exchange] = []
        self.cut_after = cut_after
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                forwarded = {
                    name: value
                    for name in ("Range", "If-Range", "Accept-Encoding")
                    if (value := self.headers.get(name)) is not None
                }
                if proxy.cut_after is not None and proxy.exchanges:
                    proxy.exchanges.append(Exchange(forwarded.get("Range"), None, 503, None, 0))
                    self.send_response(503)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                target = urlsplit(self.path)
                upstream = http.client.HTTPConnection(target.hostname or "", target.port or 80)
                path = target.path + (f"?{target.query}" if target.query else "")
                upstream.request("GET", path, headers=forwarded)
                answer = upstream.getresponse()
                body = answer.read()
                body_sent = body if proxy.cut_after is None else body[: proxy.cut_after]
                proxy.exchanges.append(
                    Exchange(
                        forwarded.get("Range"),
                        forwarded.get("If-Range"),
                        answer.status,
                        answer.getheader("ETag"),
                        len(body_sent),
                    )
                )
                self.send_response(answer.status)
                for name, value in answer.getheaders():
                    if name.lower() not in ("connection", "transfer-encoding", "date", "server"):
                        self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body_sent)
                self.close_connection = True

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def use_proxy(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., RecordingProxy]]:
    proxies: list[RecordingProxy] = []

    def use(cut_after: int | None = None) -> RecordingProxy:
        proxy = RecordingProxy(cut_after)
        proxies.append(proxy)
        for name in ("NO_PROXY", "no_proxy", "http_proxy", "HTTPS_PROXY", "https_proxy"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        return proxy

    yield use
    for proxy in proxies:
        proxy.close()


async def done_request(
    emulator: RunningEmulator, tmp_path: Path, size: int = DUMP_SIZE
) -> dict[str, object]:
    request = emulator.create_request()
    dump = write_sample_dump(tmp_path / "source.dump", size=size)
    await upload_https(emulator.url, request["id"], request["key"], dump, retry=FAST)
    assert not emulator.api("process", request=request["id"], key=request["key"])["failures"]
    return emulator.wait_for_state(request["id"], request["key"], "done")


async def interrupted_download(
    url: str, dest: Path, binding: DownloadBinding, proxy: RecordingProxy
) -> int:
    """A bound download cut midway that gave up (as a killed mover): the part's size."""
    with pytest.raises(TransferUnavailable):
        await download_https(url, dest, retry=FAST, binding=binding)
    kept = part_path(dest).stat().st_size
    assert 0 < kept < DUMP_SIZE and origin_path(dest).exists()
    return kept


@pytest.fixture
def emulator(make_emulator: Callable[..., RunningEmulator]) -> RunningEmulator:
    return make_emulator(process_seconds=0)


async def test_a_foreign_part_is_discarded_and_the_published_file_is_the_servers(
    emulator: RunningEmulator, tmp_path: Path, use_proxy: Callable[..., RecordingProxy]
) -> None:
    request = await done_request(emulator, tmp_path)
    expected = emulator.upgraded_bytes(int(str(request["id"])))
    dest = tmp_path / "upgraded.zip"
    part_path(dest).write_bytes(b"Z" * 1000)  # left by another request, the CLI, ...
    proxy = use_proxy()
    result = await download_https(
        str(request["upgraded_dump_url"]),
        dest,
        retry=FAST,
        binding=DownloadBinding(str(request["id"])),
    )
    assert dest.read_bytes() == expected
    assert result.sha256 == sha256(expected)
    assert checksum_path(dest).read_text() == f"{sha256(expected)}  upgraded.zip\n"
    assert [(e.range, e.status) for e in proxy.exchanges] == [(None, 200)]


async def test_a_part_of_another_request_is_discarded(
    emulator: RunningEmulator, tmp_path: Path, use_proxy: Callable[..., RecordingProxy]
) -> None:
    request = await done_request(emulator, tmp_path)
    url = str(request["upgraded_dump_url"])
    expected = emulator.upgraded_bytes(int(str(request["id"])))
    dest = tmp_path / "upgraded.zip"
    cut = use_proxy(cut_after=1000)
    await interrupted_download(url, dest, DownloadBinding("another-request"), cut)
    proxy = use_proxy()
    await download_https(url, dest, retry=FAST, binding=DownloadBinding(str(request["id"])))
    assert dest.read_bytes() == expected
    assert [(e.range, e.status) for e in proxy.exchanges] == [(None, 200)]


async def test_a_part_of_another_remote_file_is_discarded(
    emulator: RunningEmulator, tmp_path: Path, use_proxy: Callable[..., RecordingProxy]
) -> None:
    request = await done_request(emulator, tmp_path)
    upgraded_url = str(request["upgraded_dump_url"])
    original_url = upgraded_url.replace("/upgraded/archive", "/original/archive")
    binding = DownloadBinding(str(request["id"]))
    dest = tmp_path / "upgraded.zip"
    await interrupted_download(original_url, dest, binding, use_proxy(cut_after=1000))
    proxy = use_proxy()
    await download_https(upgraded_url, dest, retry=FAST, binding=binding)
    assert dest.read_bytes() == emulator.upgraded_bytes(int(str(request["id"])))
    assert [(e.range, e.status) for e in proxy.exchanges] == [(None, 200)]


async def test_a_part_of_the_same_request_resumes_with_if_range(
    emulator: RunningEmulator, tmp_path: Path, use_proxy: Callable[..., RecordingProxy]
) -> None:
    request = await done_request(emulator, tmp_path)
    url = str(request["upgraded_dump_url"])
    expected = emulator.upgraded_bytes(int(str(request["id"])))
    binding = DownloadBinding(str(request["id"]))
    dest = tmp_path / "upgraded.zip"
    first = use_proxy(cut_after=100_000)
    kept = await interrupted_download(url, dest, binding, first)
    etag = first.exchanges[0].etag
    assert etag
    proxy = use_proxy()
    result = await download_https(url, dest, retry=FAST, binding=binding)
    assert dest.read_bytes() == expected
    assert result.sha256 == sha256(expected)
    assert proxy.exchanges == [Exchange(f"bytes={kept}-", etag, 206, etag, len(expected) - kept)]
    assert not part_path(dest).exists() and not origin_path(dest).exists()


async def test_a_changed_remote_file_restarts_the_download_from_byte_zero(
    emulator: RunningEmulator, tmp_path: Path, use_proxy: Callable[..., RecordingProxy]
) -> None:
    request = await done_request(emulator, tmp_path)
    url = str(request["upgraded_dump_url"])
    binding = DownloadBinding(str(request["id"]))
    dest = tmp_path / "upgraded.zip"
    first = use_proxy(cut_after=100_000)
    kept = await interrupted_download(url, dest, binding, first)
    # The platform's file changes under the same URL (same size: only the validator tells).
    archive = emulator.upgraded_path(int(str(request["id"])))
    changed = bytes(b ^ 0xFF for b in archive.read_bytes())
    before = archive.stat().st_mtime_ns
    archive.write_bytes(changed)
    os.utime(archive, ns=(before + 5 * 10**9, before + 5 * 10**9))
    proxy = use_proxy()
    result = await download_https(url, dest, retry=FAST, binding=binding)
    assert dest.read_bytes() == changed
    assert result.sha256 == sha256(changed)
    [exchange] = proxy.exchanges
    assert (exchange.range, exchange.if_range, exchange.status) == (
        f"bytes={kept}-",
        first.exchanges[0].etag,
        200,
    )
    assert exchange.etag != first.exchanges[0].etag


# Kill points of a bound download in a child process: code run there before the download.
KILLED_AFTER_THE_RENAME = (
    "part_file.write_checksum_file = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)"
)
# A filesystem without hard links (SMB/CIFS shares, Azure Files): the final name is claimed
# with an empty file, then the part renamed over it; killed between the two.
KILLED_IN_THE_NO_LINK_PUBLISH = """
def no_links(*args, **kwargs):
    raise OSError(errno.EPERM, "Operation not permitted")
os.link = no_links
real_replace = os.replace
def replace(source, target):
    if str(source).endswith(".part"):  # the download's part, not a JSON record's temp file
        os.kill(os.getpid(), signal.SIGKILL)
    real_replace(source, target)
os.replace = replace
"""


def _download_killed(url: str, dest: Path, request_id: str, kill_point: str) -> None:
    """Run a bound download in a child process that is SIGKILLed at `kill_point`."""
    script = textwrap.dedent(
        """
        import asyncio, errno, os, signal, sys
        from pathlib import Path
        from odoo_upgrade.transfer import DownloadBinding, download_https
        from odoo_upgrade.transfer import part_file
        """
    )
    script += kill_point + textwrap.dedent(
        f"""
        asyncio.run(download_https({url!r}, Path({str(dest)!r}),
                                   binding=DownloadBinding({request_id!r})))
        sys.exit(3)
        """
    )
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    child = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, check=False)
    assert child.returncode == -9, "the child was meant to die by SIGKILL at its kill point"


async def _killed_download(
    emulator: RunningEmulator, tmp_path: Path, kill_point: str, binding_id: str | None = None
) -> tuple[str, bytes, Path, DownloadBinding]:
    """A done request whose bound download (bound to `binding_id`, default the request) was
    killed at `kill_point`: its URL, upgraded bytes, destination and binding."""
    request = await done_request(emulator, tmp_path)
    url = str(request["upgraded_dump_url"])
    dest = tmp_path / "upgraded.zip"
    request_id = str(request["id"])
    await asyncio.to_thread(_download_killed, url, dest, binding_id or request_id, kill_point)
    expected = emulator.upgraded_bytes(int(request_id))
    return url, expected, dest, DownloadBinding(request_id)


async def test_a_download_killed_between_rename_and_result_succeeds_on_the_next_attempt(
    emulator: RunningEmulator, tmp_path: Path, use_proxy: Callable[..., RecordingProxy]
) -> None:
    url, expected, dest, binding = await _killed_download(
        emulator, tmp_path, KILLED_AFTER_THE_RENAME
    )
    assert dest.read_bytes() == expected and not checksum_path(dest).exists()
    published = TransferResult(bytes=len(expected), sha256=sha256(expected), attempts=1)
    assert await asyncio.to_thread(published_download, dest, binding) == published
    proxy = use_proxy()
    assert await download_https(url, dest, retry=FAST, binding=binding) == published
    assert proxy.exchanges == []  # recognised on disk: nothing fetched again
    assert checksum_path(dest).read_text() == f"{sha256(expected)}  upgraded.zip\n"


async def test_a_download_killed_mid_publish_without_hard_links_succeeds_on_the_next_attempt(
    emulator: RunningEmulator, tmp_path: Path, use_proxy: Callable[..., RecordingProxy]
) -> None:
    """The crash leaves the final name empty and the whole file in the part, with its
    receipt: the next attempt finishes the publish instead of calling it DestinationExists."""
    url, expected, dest, binding = await _killed_download(
        emulator, tmp_path, KILLED_IN_THE_NO_LINK_PUBLISH
    )
    assert dest.read_bytes() == b"" and part_path(dest).read_bytes() == expected
    published = TransferResult(bytes=len(expected), sha256=sha256(expected), attempts=1)
    proxy = use_proxy()
    assert await download_https(url, dest, retry=FAST, binding=binding) == published
    assert proxy.exchanges == []  # the part was whole: nothing fetched again
    assert dest.read_bytes() == expected and not part_path(dest).exists()
    assert checksum_path(dest).read_text() == f"{sha256(expected)}  upgraded.zip\n"


async def test_an_empty_destination_is_not_filled_from_a_part_of_another_request(
    emulator: RunningEmulator, tmp_path: Path
) -> None:
    url, _, dest, binding = await _killed_download(
        emulator, tmp_path, KILLED_IN_THE_NO_LINK_PUBLISH, binding_id="another-request"
    )
    with pytest.raises(DestinationExists):
        await download_https(url, dest, retry=FAST, binding=binding)
    assert dest.read_bytes() == b""


async def test_a_finished_download_called_again_returns_the_same_result(
    emulator: RunningEmulator, tmp_path: Path
) -> None:
    request = await done_request(emulator, tmp_path)
    url = str(request["upgraded_dump_url"])
    binding = DownloadBinding(str(request["id"]))
    dest = tmp_path / "upgraded.zip"
    first = await download_https(url, dest, retry=FAST, binding=binding)
    assert await download_https(url, dest, retry=FAST, binding=binding) == first


async def test_a_destination_written_by_another_request_is_refused_untouched(
    emulator: RunningEmulator, tmp_path: Path
) -> None:
    request = await done_request(emulator, tmp_path)
    url = str(request["upgraded_dump_url"])
    dest = tmp_path / "upgraded.zip"
    await download_https(url, dest, retry=FAST, binding=DownloadBinding("another-request"))
    before = (dest.read_bytes(), checksum_path(dest).read_text())
    with pytest.raises(DestinationExists):
        await download_https(url, dest, retry=FAST, binding=DownloadBinding(str(request["id"])))
    assert (dest.read_bytes(), checksum_path(dest).read_text()) == before
    assert (
        await asyncio.to_thread(published_download, dest, DownloadBinding(str(request["id"])))
        is None
    )


# -- SFTP: bound to the request, the remote file name, its size and mtime ----------------------


class Interrupted(Exception):
    """Raised from a progress callback: the download stops there, as if the mover died."""


# Larger than what OpenSSH's sftp has in flight (a failed attempt keeps only settled bytes).
SFTP_DUMP_SIZE = 6 * 1024 * 1024
SFTP_DROP_AFTER = 4 * 1024 * 1024


@pytest.fixture(params=["openssh", "paramiko"])
def client(request: pytest.FixtureRequest) -> str:
    """Which SFTP client moves the bytes (the control connection is paramiko's in both)."""
    return str(request.param)


async def sftp_access(
    emulator: RunningEmulator, request: dict[str, object], pair: SshKeyPair
) -> SftpAccess:
    async with PlatformClient(emulator.url, retry=FAST) as client:
        return await client.request_sftp_access(
            int(str(request["id"])), str(request["key"]), pair.public_line + "\n"
        )


def sftp_download(
    emulator: RunningEmulator,
    access: SftpAccess,
    pair: SshKeyPair,
    dest: Path,
    binding: DownloadBinding,
    client: str,
    progress: Callable[[int, int | None], None] | None = None,
) -> TransferResult:
    return download_sftp(
        access,
        pair.private_pem,
        f"upgraded_{access.shared_file}",
        dest,
        host_key=HostKeyCheck(pinned=emulator.host_key_line()),
        binding=binding,
        progress=progress,
        client=client,  # type: ignore[arg-type]
    )


def interrupt_after_some_bytes(done: int, total: int | None) -> None:
    if done:
        raise Interrupted(done)


async def sftp_part_left_by_a_crash(
    make_emulator: Callable[..., RunningEmulator],
    tmp_path: Path,
    client: str,
    binding_id: str | None = None,
) -> tuple[RunningEmulator, dict[str, object], SftpAccess, SshKeyPair, Path]:
    """A done request whose bound SFTP download was interrupted once bytes had arrived."""
    emulator = make_emulator(process_seconds=0, drop_after_bytes=SFTP_DROP_AFTER)
    request = await done_request(emulator, tmp_path, SFTP_DUMP_SIZE)
    pair = generate_ssh_keypair()
    access = await sftp_access(emulator, request, pair)
    dest = tmp_path / "upgraded.zip"
    binding = DownloadBinding(binding_id or str(request["id"]))
    with pytest.raises(Interrupted):
        await asyncio.to_thread(
            sftp_download, emulator, access, pair, dest, binding, client, interrupt_after_some_bytes
        )
    assert 0 < part_path(dest).stat().st_size < SFTP_DUMP_SIZE and origin_path(dest).exists()
    return emulator, request, access, pair, dest


async def test_sftp_a_foreign_part_is_discarded(
    emulator: RunningEmulator, tmp_path: Path, client: str
) -> None:
    request = await done_request(emulator, tmp_path)
    pair = generate_ssh_keypair()
    access = await sftp_access(emulator, request, pair)
    dest = tmp_path / "upgraded.zip"
    part_path(dest).write_bytes(b"Z" * 1000)
    binding = DownloadBinding(str(request["id"]))
    result = await asyncio.to_thread(sftp_download, emulator, access, pair, dest, binding, client)
    expected = emulator.upgraded_bytes(int(str(request["id"])))
    assert dest.read_bytes() == expected and result.sha256 == sha256(expected)


async def test_sftp_a_part_of_another_request_is_discarded(
    make_emulator: Callable[..., RunningEmulator], tmp_path: Path, client: str
) -> None:
    emulator, request, access, pair, dest = await sftp_part_left_by_a_crash(
        make_emulator, tmp_path, client, binding_id="another-request"
    )
    part = part_path(dest)
    part.write_bytes(b"Z" * part.stat().st_size)  # would show if it were continued
    binding = DownloadBinding(str(request["id"]))
    await asyncio.to_thread(sftp_download, emulator, access, pair, dest, binding, client)
    assert dest.read_bytes() == emulator.upgraded_bytes(int(str(request["id"])))


async def test_sftp_a_part_of_the_same_request_is_continued(
    make_emulator: Callable[..., RunningEmulator], tmp_path: Path, client: str
) -> None:
    emulator, request, access, pair, dest = await sftp_part_left_by_a_crash(
        make_emulator, tmp_path, client
    )
    # A marked prefix shows it was continued; its last UNSETTLED bytes are fetched again
    # (where a killed sftp may have left holes).
    part_path(dest).write_bytes(b"Z" * SFTP_DROP_AFTER)
    binding = DownloadBinding(str(request["id"]))
    result = await asyncio.to_thread(sftp_download, emulator, access, pair, dest, binding, client)
    expected = emulator.upgraded_bytes(int(str(request["id"])))
    kept = SFTP_DROP_AFTER - UNSETTLED
    assert dest.read_bytes() == b"Z" * kept + expected[kept:]
    assert result.sha256 == sha256(dest.read_bytes())


async def test_sftp_a_changed_remote_file_restarts_from_byte_zero(
    make_emulator: Callable[..., RunningEmulator], tmp_path: Path, client: str
) -> None:
    emulator, request, access, pair, dest = await sftp_part_left_by_a_crash(
        make_emulator, tmp_path, client
    )
    archive = emulator.upgraded_path(int(str(request["id"])))
    changed = bytes(b ^ 0xFF for b in archive.read_bytes())
    before = archive.stat().st_mtime_ns
    archive.write_bytes(changed)
    os.utime(archive, ns=(before + 5 * 10**9, before + 5 * 10**9))
    binding = DownloadBinding(str(request["id"]))
    result = await asyncio.to_thread(sftp_download, emulator, access, pair, dest, binding, client)
    assert dest.read_bytes() == changed and result.sha256 == sha256(changed)


async def test_sftp_a_finished_download_called_again_returns_the_same_result(
    emulator: RunningEmulator, tmp_path: Path, client: str
) -> None:
    request = await done_request(emulator, tmp_path)
    pair = generate_ssh_keypair()
    access = await sftp_access(emulator, request, pair)
    dest = tmp_path / "upgraded.zip"
    binding = DownloadBinding(str(request["id"]))
    first = await asyncio.to_thread(sftp_download, emulator, access, pair, dest, binding, client)
    checksum_path(dest).unlink()  # as if killed before the checksum was written
    again = await asyncio.to_thread(sftp_download, emulator, access, pair, dest, binding, client)
    assert again == first
    assert checksum_path(dest).read_text() == f"{first.sha256}  upgraded.zip\n"


# -- the emulator's validators, as a web server gives them ------------------------------------


@pytest.mark.parametrize(
    ("if_range", "status"),
    [
        ("etag", 206),
        ("last-modified", 206),
        ('W/"weak"', 200),  # a weak tag never matches in If-Range
        ('"another-version"', 200),
        ("Thu, 01 Jan 1981 00:00:00 GMT", 200),
    ],
)
async def test_the_emulator_honours_if_range_like_a_web_server(
    emulator: RunningEmulator, tmp_path: Path, if_range: str, status: int
) -> None:
    request = await done_request(emulator, tmp_path)
    target = urlsplit(str(request["upgraded_dump_url"]))
    expected = emulator.upgraded_bytes(int(str(request["id"])))

    def get(headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        connection = http.client.HTTPConnection(target.hostname or "", target.port)
        connection.request("GET", target.path, headers=headers)
        answer = connection.getresponse()
        body = answer.read()
        connection.close()
        return answer.status, {k.lower(): v for k, v in answer.getheaders()}, body

    _, first, _ = await asyncio.to_thread(get, {})
    assert first["etag"].startswith('"') and first["last-modified"].endswith("GMT")
    sent = first.get(if_range, if_range)
    got, _, body = await asyncio.to_thread(get, {"Range": "bytes=100-", "If-Range": sent})
    assert got == status
    assert body == (expected[100:] if status == 206 else expected)
