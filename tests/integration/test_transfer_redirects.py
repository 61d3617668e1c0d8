"""Downloads follow redirects on the same scheme, host and port only: never to another host,
never from https to http (the key-bearing URL's answer must come from where it was sent)."""

from __future__ import annotations

import hashlib
import http.server
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from odoo_upgrade.platform import RetryPolicy
from odoo_upgrade.transfer import RemoteRefused, download_https
from odoo_upgrade.transfer.part_file import part_path
from tests.integration.test_transfer_https import self_signed_tls

FAST = RetryPolicy(attempts=2, base_delay=0.01, max_delay=0.05)
KEY = "Aw7pItGVKFuZ_FOR3U8VFQ=="
CONTENT = b"the upgraded dump " * 4000


class Server:
    """Serves CONTENT at /file and redirects /go to `self.location`; records request paths."""

    def __init__(self, tls: ssl.SSLContext | None = None, host: str = "127.0.0.1") -> None:
        self.location = ""
        self.paths: list[str] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.paths.append(self.path)
                if self.path.startswith("/go"):
                    self.send_response(302)
                    self.send_header("Location", server.location)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(CONTENT)))
                self.end_headers()
                self.wfile.write(CONTENT)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer((host, 0), Handler)
        self.httpd.daemon_threads = True
        if tls is not None:
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
        self.scheme = "https" if tls else "http"
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"{self.scheme}://{host}:{self.port}{path}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def servers(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Server]]:
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    started: list[Server] = []
    yield started
    for server in started:
        server.close()


async def test_a_redirect_on_the_same_origin_is_followed(
    servers: list[Server], tmp_path: Path
) -> None:
    server = Server()
    servers.append(server)
    server.location = f"/file?key={KEY}"
    dest = tmp_path / "upgraded.zip"
    result = await download_https(server.url("/go"), dest, retry=FAST)
    assert dest.read_bytes() == CONTENT
    assert result.sha256 == hashlib.sha256(CONTENT).hexdigest()
    assert server.paths == ["/go", f"/file?key={KEY}"]


async def test_a_redirect_to_another_port_is_refused_naming_the_target(
    servers: list[Server], tmp_path: Path
) -> None:
    start, elsewhere = Server(), Server()
    servers += [start, elsewhere]
    start.location = elsewhere.url(f"/database/eu1/7/{KEY}/upgraded/archive?key={KEY}")
    dest = tmp_path / "upgraded.zip"
    with pytest.raises(RemoteRefused) as caught:
        await download_https(start.url("/go"), dest, retry=FAST)
    text = str(caught.value)
    assert f"http://127.0.0.1:{elsewhere.port}" in text
    assert KEY not in text and "/database" not in text
    assert not caught.value.transient
    assert elsewhere.paths == []  # never contacted
    assert not dest.exists()
    assert not part_path(dest).exists() or part_path(dest).stat().st_size == 0


async def test_a_redirect_to_another_host_name_is_refused(
    servers: list[Server], tmp_path: Path
) -> None:
    server = Server()
    servers.append(server)
    server.location = server.url("/file", host="localhost")  # same port, another host
    with pytest.raises(RemoteRefused, match=f"http://localhost:{server.port}"):
        await download_https(server.url("/go"), tmp_path / "upgraded.zip", retry=FAST)
    assert server.paths == ["/go"]


async def test_a_redirect_from_https_to_http_is_refused(
    servers: list[Server], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    context, cert_path = self_signed_tls(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert_path))
    secure, plain = Server(tls=context), Server()
    servers += [secure, plain]
    secure.location = plain.url(f"/file?key={KEY}")
    with pytest.raises(RemoteRefused, match="https to http") as caught:
        await download_https(secure.url("/go"), tmp_path / "upgraded.zip", retry=FAST)
    assert KEY not in str(caught.value)
    assert plain.paths == []
