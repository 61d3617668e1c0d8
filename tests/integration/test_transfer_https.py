"""HTTPS upload and download against the emulator on loopback, with dropped connections."""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import http.server
import ipaddress
import os
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlencode

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from odoo_upgrade.platform import PlatformFailure, PlatformUnavailable, RetryPolicy
from odoo_upgrade.transfer import (
    DestinationExists,
    TransferError,
    TransferUnavailable,
    download_https,
    upload_https,
)
from odoo_upgrade.transfer.errors import SizeMismatch
from odoo_upgrade.transfer.file_post import BLOCK_SIZE, FilePost
from odoo_upgrade.transfer.part_file import part_path
from tests.support.emulator import RunningEmulator, write_sample_dump

FAST = RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.05)
DUMP_SIZE = 256 * 1024
DROP_AFTER = 100_000


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def upgraded_request(emulator: RunningEmulator, tmp_path: Path) -> dict[str, object]:
    """A request in `done` (uploaded with retries: `--drop-after-bytes` cuts uploads too)."""
    request = emulator.create_request()
    dump = write_sample_dump(tmp_path / "source.dump", size=DUMP_SIZE)
    await upload_https(emulator.url, request["id"], request["key"], dump, retry=FAST)
    assert not emulator.api("process", request=request["id"], key=request["key"])["failures"]
    return emulator.wait_for_state(request["id"], request["key"], "done")


async def test_upload_streams_the_file_and_reports_its_sha256(
    emulator: RunningEmulator, tmp_path: Path
) -> None:
    request = emulator.create_request()
    dump = write_sample_dump(tmp_path / "db.dump", size=DUMP_SIZE)
    seen: list[tuple[int, int | None]] = []
    result = await upload_https(
        emulator.url, request["id"], request["key"], dump, progress=lambda d, t: seen.append((d, t))
    )
    assert emulator.original_path(request["id"]).read_bytes() == dump.read_bytes()
    assert (result.bytes, result.sha256, result.attempts) == (
        dump.stat().st_size,
        sha256(dump.read_bytes()),
        1,
    )
    assert seen[-1] == (dump.stat().st_size, dump.stat().st_size)


async def test_upload_of_many_blocks_sends_each_once_in_order(
    emulator: RunningEmulator, tmp_path: Path
) -> None:
    request = emulator.create_request()
    dump = write_sample_dump(tmp_path / "db.dump", size=3 * BLOCK_SIZE + 12345)
    seen: list[int] = []
    result = await upload_https(
        emulator.url, request["id"], request["key"], dump, progress=lambda d, t: seen.append(d)
    )
    data = dump.read_bytes()
    assert emulator.original_path(request["id"]).read_bytes() == data
    assert (result.bytes, result.sha256) == (len(data), sha256(data))
    assert seen == [BLOCK_SIZE, 2 * BLOCK_SIZE, 3 * BLOCK_SIZE, len(data)]


def cut_short(dump: Path) -> None:
    os.truncate(dump, BLOCK_SIZE + 1000)


def rewritten_in_place(dump: Path) -> None:
    """Same size, other bytes: the sha256 reported must be of one file, not of a mix."""
    with dump.open("r+b") as file:
        file.seek(3 * BLOCK_SIZE)
        file.write(b"rewritten")
    stamp = dump.stat()
    os.utime(dump, ns=(stamp.st_atime_ns, stamp.st_mtime_ns + 1_000_000))


@pytest.mark.parametrize("change", [cut_short, rewritten_in_place])
async def test_upload_of_a_file_changed_while_being_sent_is_refused(
    emulator: RunningEmulator, tmp_path: Path, change: Callable[[Path], None]
) -> None:
    request = emulator.create_request()
    dump = write_sample_dump(tmp_path / "db.dump", size=4 * BLOCK_SIZE)
    query = urlencode({"request": request["id"], "key": request["key"]})
    url = f"{emulator.url}/database/v1/upload?{query}"

    def change_after_the_first_block(sent: int, size: int | None) -> None:
        if sent == BLOCK_SIZE:
            change(dump)  # another process rewrites the dump

    post = FilePost(url, dump, 4 * BLOCK_SIZE, change_after_the_first_block)
    with pytest.raises(SizeMismatch, match=r"db\.dump changed while being sent"):
        await asyncio.to_thread(post.run)
    if change is cut_short:  # the body ended short of its length: nothing stored
        assert not emulator.original_path(request["id"]).exists()


async def test_upload_cut_mid_body_is_sent_again_whole(
    make_emulator: Callable[..., RunningEmulator], tmp_path: Path
) -> None:
    emulator = make_emulator(drop_after_bytes=DROP_AFTER)
    request = emulator.create_request()
    dump = write_sample_dump(tmp_path / "db.dump", size=DUMP_SIZE)
    result = await upload_https(emulator.url, request["id"], request["key"], dump, retry=FAST)
    assert result.attempts == 2
    assert result.sha256 == sha256(dump.read_bytes())
    assert emulator.original_path(request["id"]).read_bytes() == dump.read_bytes()


async def test_upload_refused_by_the_platform_is_permanent(
    emulator: RunningEmulator, tmp_path: Path
) -> None:
    request = emulator.create_request()
    dump = write_sample_dump(tmp_path / "db.dump", size=16 * 1024)
    with pytest.raises(PlatformFailure) as caught:
        await upload_https(emulator.url, request["id"], "WrongKey-0000==", dump, retry=FAST)
    assert not caught.value.transient
    assert len(emulator.calls("upload")) == 1


async def test_upload_to_a_failing_platform_gives_up_after_the_attempts(
    make_emulator: Callable[..., RunningEmulator], tmp_path: Path
) -> None:
    emulator = make_emulator(fail_rate=1.0)
    dump = write_sample_dump(tmp_path / "db.dump", size=16 * 1024)
    with pytest.raises(PlatformUnavailable):
        await upload_https(emulator.url, 10534, "Aw7pItGVKFuZ_FOR3U8VFQ==", dump, retry=FAST)
    assert len(emulator.calls("upload")) == FAST.attempts


async def test_download_resumes_after_a_cut_and_matches_the_upgraded_file(
    make_emulator: Callable[..., RunningEmulator], tmp_path: Path
) -> None:
    emulator = make_emulator(process_seconds=0, drop_after_bytes=DROP_AFTER)
    request = await upgraded_request(emulator, tmp_path)
    expected = emulator.upgraded_bytes(int(request["id"]))
    assert len(expected) > DROP_AFTER  # the cut happens mid-file
    dest = tmp_path / "out" / "upgraded.zip"
    dest.parent.mkdir()
    seen: list[int] = []
    result = await download_https(
        str(request["upgraded_dump_url"]),
        dest,
        retry=FAST,
        progress=lambda done, total: seen.append(done),
    )
    assert result.attempts == 2
    assert dest.read_bytes() == expected
    assert result.sha256 == sha256(expected)
    assert (tmp_path / "out" / "upgraded.zip.sha256").read_text() == (
        f"{sha256(expected)}  upgraded.zip\n"
    )
    assert sorted(p.name for p in dest.parent.iterdir()) == ["upgraded.zip", "upgraded.zip.sha256"]
    assert seen == sorted(seen) and seen[-1] == len(expected)


async def test_download_rerun_resumes_the_part_left_by_a_crash(
    make_emulator: Callable[..., RunningEmulator], tmp_path: Path
) -> None:
    emulator = make_emulator(process_seconds=0)
    request = await upgraded_request(emulator, tmp_path)
    expected = emulator.upgraded_bytes(int(request["id"]))
    dest = tmp_path / "upgraded.zip"
    kept = len(expected) // 3
    part_path(dest).write_bytes(expected[:kept])
    result = await download_https(str(request["upgraded_dump_url"]), dest, retry=FAST)
    assert dest.read_bytes() == expected
    assert result.sha256 == sha256(expected)
    assert not part_path(dest).exists()


async def test_download_rerun_asks_only_for_the_missing_range(
    make_emulator: Callable[..., RunningEmulator], tmp_path: Path
) -> None:
    emulator = make_emulator(process_seconds=0)
    request = await upgraded_request(emulator, tmp_path)
    expected = emulator.upgraded_bytes(int(request["id"]))
    dest = tmp_path / "upgraded.zip"
    # A marked prefix shows that the part was continued, not fetched again from byte 0.
    part_path(dest).write_bytes(b"Z" * 1000)
    result = await download_https(str(request["upgraded_dump_url"]), dest, retry=FAST)
    assert dest.read_bytes() == b"Z" * 1000 + expected[1000:]
    assert result.sha256 == sha256(dest.read_bytes())  # the hash covers the resumed prefix


async def test_download_rerun_after_a_crash_before_rename_publishes_the_complete_part(
    make_emulator: Callable[..., RunningEmulator], tmp_path: Path
) -> None:
    emulator = make_emulator(process_seconds=0)
    request = await upgraded_request(emulator, tmp_path)
    size = len(emulator.upgraded_bytes(int(request["id"])))
    dest = tmp_path / "upgraded.zip"
    # Whole, but marked: the server answers 416 to the range past its end, nothing is fetched.
    part_path(dest).write_bytes(b"Z" * size)
    result = await download_https(str(request["upgraded_dump_url"]), dest, retry=FAST)
    assert dest.read_bytes() == b"Z" * size
    assert (result.bytes, result.sha256) == (size, sha256(b"Z" * size))


async def test_download_restarts_cleanly_when_the_part_is_longer_than_the_file(
    make_emulator: Callable[..., RunningEmulator], tmp_path: Path
) -> None:
    emulator = make_emulator(process_seconds=0)
    request = await upgraded_request(emulator, tmp_path)
    expected = emulator.upgraded_bytes(int(request["id"]))
    dest = tmp_path / "upgraded.zip"
    part_path(dest).write_bytes(b"x" * (len(expected) + 10))
    result = await download_https(str(request["upgraded_dump_url"]), dest, retry=FAST)
    assert dest.read_bytes() == expected
    assert result.sha256 == sha256(expected)


async def test_download_never_overwrites_an_existing_destination(
    make_emulator: Callable[..., RunningEmulator], tmp_path: Path
) -> None:
    emulator = make_emulator(process_seconds=0)
    request = await upgraded_request(emulator, tmp_path)
    dest = tmp_path / "upgraded.zip"
    dest.write_bytes(b"precious earlier result")
    with pytest.raises(DestinationExists):
        await download_https(str(request["upgraded_dump_url"]), dest, retry=FAST)
    assert dest.read_bytes() == b"precious earlier result"
    assert not part_path(dest).exists()
    assert not (tmp_path / "upgraded.zip.sha256").exists()


async def test_download_with_a_wrong_key_is_refused_and_leaves_no_final_file(
    make_emulator: Callable[..., RunningEmulator], tmp_path: Path
) -> None:
    emulator = make_emulator(process_seconds=0)
    request = await upgraded_request(emulator, tmp_path)
    url = str(request["upgraded_dump_url"]).replace(str(request["key"]), "WrongKey-0000==")
    dest = tmp_path / "upgraded.zip"
    with pytest.raises((TransferError, PlatformFailure)) as caught:
        await download_https(url, dest, retry=FAST)
    assert not caught.value.transient
    assert not dest.exists()
    assert "WrongKey-0000==" not in str(caught.value)


async def test_download_size_check_against_the_expected_size(
    make_emulator: Callable[..., RunningEmulator], tmp_path: Path
) -> None:
    emulator = make_emulator(process_seconds=0)
    request = await upgraded_request(emulator, tmp_path)
    dest = tmp_path / "upgraded.zip"
    with pytest.raises(TransferError, match="expected 7"):
        await download_https(str(request["upgraded_dump_url"]), dest, retry=FAST, expected_size=7)
    assert list(p for p in tmp_path.iterdir() if p.name.startswith("upgraded")) == []


async def test_download_from_a_stopped_platform_gives_up_keeping_the_part(
    make_emulator: Callable[..., RunningEmulator], tmp_path: Path
) -> None:
    emulator = make_emulator(process_seconds=0)
    request = await upgraded_request(emulator, tmp_path)
    emulator.stop()
    dest = tmp_path / "upgraded.zip"
    with pytest.raises(TransferUnavailable, match="without progress"):
        await download_https(str(request["upgraded_dump_url"]), dest, retry=FAST)
    assert not dest.exists()


# -- a file server of our own: TLS, and a body that stalls midway ----------------------------


class FileServer:
    """Serves `content` (with Range) on 127.0.0.1 from a thread; optionally over TLS, and
    optionally stalling after `stall_after` bytes of the first answer until `release()`."""

    def __init__(
        self, content: bytes, tls: ssl.SSLContext | None = None, stall_after: int | None = None
    ) -> None:
        self.content = content
        self.stall_after = stall_after
        self.stalled = threading.Event()  # set once the first answer has stalled
        self._released = threading.Event()
        self.ranges: list[str | None] = []
        self.targets: list[str] = []  # request targets: absolute URLs when used as a proxy
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                wanted = self.headers.get("Range")
                server.ranges.append(wanted)
                server.targets.append(self.path)
                start = int(wanted.removeprefix("bytes=").rstrip("-")) if wanted else 0
                body = server.content[start:]
                self.send_response(206 if wanted else 200)
                if wanted:
                    total = len(server.content)
                    self.send_header("Content-Range", f"bytes {start}-{total - 1}/{total}")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if server.stall_after is not None and len(server.ranges) == 1:
                    self.wfile.write(body[: server.stall_after])
                    self.wfile.flush()
                    server.stalled.set()
                    server._released.wait(30)
                    return
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        if tls is not None:
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
        self.scheme = "https" if tls is not None else "http"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"{self.scheme}://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def release(self) -> None:
        self._released.set()

    def close(self) -> None:
        self.release()
        self.httpd.shutdown()
        self.httpd.server_close()


def self_signed_tls(directory: Path) -> tuple[ssl.SSLContext, Path]:
    """A server TLS context for 127.0.0.1 and the path of its certificate (PEM)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    return context, cert_path


KEY_PATH = "/database/eu/10534/Aw7pItGVKFuZ_FOR3U8VFQ==/upgraded.zip"


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[FileServer, Path]]:
    context, cert_path = self_signed_tls(tmp_path)
    server = FileServer(b"dump-" * 20_000, tls=context)
    yield server, cert_path
    server.close()


async def test_download_over_https_refuses_a_certificate_it_does_not_trust(
    tls_server: tuple[FileServer, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server, _ = tls_server
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    dest = tmp_path / "upgraded.zip"
    with pytest.raises(TransferUnavailable) as caught:
        await download_https(server.url(KEY_PATH), dest, retry=FAST)
    assert "CERTIFICATE_VERIFY_FAILED" in str(caught.value)
    assert "Aw7pItGVKFuZ_FOR3U8VFQ==" not in str(caught.value)
    assert server.ranges == []  # no request was sent over the untrusted connection
    assert not dest.exists()


async def test_download_over_https_from_a_trusted_server_matches_the_file(
    tls_server: tuple[FileServer, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server, cert_path = tls_server
    monkeypatch.setenv("SSL_CERT_FILE", str(cert_path))  # as httpx: the trust store to use
    dest = tmp_path / "upgraded.zip"
    result = await download_https(server.url(KEY_PATH), dest, retry=FAST)
    assert dest.read_bytes() == server.content
    assert (result.bytes, result.sha256) == (len(server.content), sha256(server.content))


async def test_download_cancelled_midway_keeps_the_part_for_a_rerun(tmp_path: Path) -> None:
    content = bytes(range(256)) * 4096  # 1 MiB
    server = FileServer(content, stall_after=300_000)
    try:
        dest = tmp_path / "upgraded.zip"
        task = asyncio.ensure_future(download_https(server.url("/f"), dest, retry=FAST))
        assert await asyncio.to_thread(server.stalled.wait, 30)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        kept = part_path(dest).stat().st_size
        assert kept <= 300_000 and not dest.exists()
        # The lock is released and the rerun continues the part instead of starting over.
        result = await download_https(server.url("/f"), dest, retry=FAST)
        assert dest.read_bytes() == content
        assert result.sha256 == sha256(content)
        assert server.ranges == [None, f"bytes={kept}-" if kept else None]
    finally:
        server.close()


async def test_download_goes_through_the_proxy_of_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # httpx (the platform client) honours HTTP(S)_PROXY / NO_PROXY; downloads do too.
    proxy = FileServer(b"through-the-proxy " * 5000)
    try:
        for name in ("NO_PROXY", "no_proxy", "http_proxy"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("HTTP_PROXY", proxy.url(""))
        dest = tmp_path / "upgraded.zip"
        url = "http://upgrade.invalid/database/eu/7/Aw7pItGVKFuZ_FOR3U8VFQ==/upgraded.zip"
        result = await download_https(url, dest, retry=FAST)
        assert dest.read_bytes() == proxy.content
        assert result.sha256 == sha256(proxy.content)
        assert proxy.targets == [url]
    finally:
        proxy.close()


async def test_download_bypasses_the_proxy_for_hosts_in_no_proxy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = FileServer(b"direct " * 5000)
    try:
        monkeypatch.delenv("http_proxy", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        with socket.socket() as probe:  # a free port: nothing listens there
            probe.bind(("127.0.0.1", 0))
            dead_port = probe.getsockname()[1]
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{dead_port}")
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        dest = tmp_path / "upgraded.zip"
        await download_https(server.url("/upgraded.zip"), dest, retry=FAST)
        assert dest.read_bytes() == server.content
        assert server.targets == ["/upgraded.zip"]
    finally:
        server.close()


# -- uploads to a server of our own: TLS trust, and cancelling ------------------------------


class UploadServer:
    """Takes one POSTed body on 127.0.0.1 and answers `{"request": {}}`; optionally over TLS,
    and optionally never answering (until closed) once the body has arrived."""

    def __init__(self, tls: ssl.SSLContext | None = None, answer: bool = True) -> None:
        self.bodies: list[bytes] = []
        self.received = threading.Event()
        self._closing = threading.Event()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                server.bodies.append(body)
                server.received.set()
                if not answer:
                    server._closing.wait(30)
                    return
                reply = b'{"request": {}}'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        if tls is not None:
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._closing.set()
        self.httpd.shutdown()
        self.httpd.server_close()


async def test_upload_over_https_to_a_trusted_server_sends_the_whole_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    context, cert_path = self_signed_tls(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert_path))
    server = UploadServer(tls=context)
    try:
        dump = write_sample_dump(tmp_path / "db.dump", size=DUMP_SIZE)
        result = await upload_https(server.url, 7, "Aw7pItGVKFuZ_FOR3U8VFQ==", dump, retry=FAST)
        assert server.bodies == [dump.read_bytes()]
        assert (result.bytes, result.sha256) == (dump.stat().st_size, sha256(dump.read_bytes()))
    finally:
        server.close()


async def test_upload_refuses_a_certificate_it_does_not_trust_without_showing_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    context, _ = self_signed_tls(tmp_path)
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    server = UploadServer(tls=context)
    try:
        dump = write_sample_dump(tmp_path / "db.dump", size=16 * 1024)
        with pytest.raises(PlatformUnavailable) as caught:
            await upload_https(server.url, 7, "Aw7pItGVKFuZ_FOR3U8VFQ==", dump, retry=FAST)
        assert "CERTIFICATE_VERIFY_FAILED" in str(caught.value)
        assert "Aw7pItGVKFuZ_FOR3U8VFQ==" not in str(caught.value)
        assert server.bodies == []
    finally:
        server.close()


async def test_upload_cancelled_while_awaiting_the_answer_stops_at_once(tmp_path: Path) -> None:
    server = UploadServer(answer=False)
    try:
        dump = write_sample_dump(tmp_path / "db.dump", size=DUMP_SIZE)
        task = asyncio.ensure_future(
            upload_https(server.url, 7, "Aw7pItGVKFuZ_FOR3U8VFQ==", dump, retry=FAST)
        )
        assert await asyncio.to_thread(server.received.wait, 30)
        task.cancel()
        # The worker thread is stopped rather than left waiting up to 15 minutes.
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 30)
        assert server.bodies == [dump.read_bytes()]
    finally:
        server.close()
