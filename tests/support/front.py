"""A small HTTP front (reverse proxy) before the emulator, as a gateway would stand before the
platform: it passes every call on, and can hold the answer to `create` (the platform has
acted, the answer is late) or replace it with a gateway error (502/504).

    with PlatformFront(emulator.url) as front:        # front.url goes into spec.platform.url
        front.hold_create()                            # answers to create wait until released
        front.answer_create_with(502)                  # create reaches the platform, 502 back
        front.echo_key_in = {"status", "process"}      # the platform quotes the request key back
        front.forge_known_hosts = "ssh-ed25519 AAAA…"  # upgrade/request: transfer/start names
                                                       # another host key than the server's
"""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.parse
from types import TracebackType

from aiohttp import ClientSession, web


class PlatformFront:
    """A reverse proxy on a free loopback port, run in a thread of its own."""

    def __init__(self, upstream: str, *, port: int = 0) -> None:
        self.upstream = upstream.rstrip("/")
        self._bind_port = port
        self.create_status: int | None = None  # replace create's answer with this status
        self.creates_seen = 0
        # A careless platform: `status` quotes the key in customer_message, `process` refuses
        # with the key in its failure (for the methods named here).
        self.echo_key_in: set[str] = set()
        # upgrade/request: the key type and base64 put in transfer/start's known_hosts instead
        # of the server's (each line keeps its host pattern).
        self.forge_known_hosts: str | None = None
        self._released = threading.Event()
        self._released.set()
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self.port = 0
        self._thread = threading.Thread(target=self._serve, name="platform-front", daemon=True)
        self._thread.start()
        if not self._started.wait(10):
            raise RuntimeError("the platform front did not start")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def hold_create(self) -> None:
        """From now on, answers to `create` are held until `release()`."""
        self._released.clear()

    def release(self) -> None:
        self._released.set()

    def answer_create_with(self, status: int | None) -> None:
        """Pass `create` on, then answer `status` instead of the platform's answer."""
        self.create_status = status

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application(client_max_size=1024**3)
        app.router.add_route("*", "/{tail:.*}", self._forward)
        runner = web.AppRunner(app, access_log=None)
        self._loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", self._bind_port)
        self._loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._runner = runner
        self._started.set()
        self._loop.run_forever()

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = {
            k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")
        }
        async with (
            ClientSession() as session,
            session.request(
                request.method,
                self.upstream + request.rel_url.raw_path_qs,
                data=body,
                headers=headers,
                allow_redirects=False,
            ) as answer,
        ):
            content = await answer.read()
            status, content_type = answer.status, answer.headers.get("Content-Type")
        if request.path.rsplit("/", 1)[-1] in self.echo_key_in:
            echoed = _echo_key(request.path, body, status, content)
            if echoed is not None:
                status, content = echoed
        if request.path.endswith("/transfer/start") and self.forge_known_hosts:
            content = _forged_known_hosts(content, self.forge_known_hosts)
        if request.path.endswith("/create"):
            self.creates_seen += 1
            while not self._released.is_set():  # the platform acted; the answer waits
                await asyncio.sleep(0.05)
            if self.create_status is not None:
                return web.Response(status=self.create_status, text="<html>Bad Gateway</html>")
        return web.Response(status=status, body=content, content_type=_mime(content_type))

    def stop(self) -> None:
        self._released.set()
        if self._loop.is_running():
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def __enter__(self) -> PlatformFront:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _echo_key(path: str, body: bytes, status: int, content: bytes) -> tuple[int, bytes] | None:
    """The answer a careless platform gives: the caller's key quoted back in it."""
    key = (urllib.parse.parse_qs(body.decode(errors="replace")).get("key") or [""])[0]
    if not key:
        return None
    if path.endswith("/status"):
        answer = json.loads(content)
        if isinstance(answer.get("request"), dict):
            answer["request"]["customer_message"] = f"Request for key {key}: all good so far"
        return status, json.dumps(answer).encode()
    if path.endswith("/process"):
        failure = {"reason": "KEY:REJECTED", "message": f"key {key} is not valid", "value": key}
        return 400, json.dumps({"failures": [failure]}).encode()
    return None


def _forged_known_hosts(content: bytes, key: str) -> bytes:
    answer = json.loads(content)
    result = answer.get("result")
    if isinstance(result, dict) and isinstance(result.get("known_hosts"), str):
        lines = [line.split()[0] + " " + key for line in result["known_hosts"].splitlines() if line]
        result["known_hosts"] = "\n".join(lines) + "\n"
    return json.dumps(answer).encode()


def _mime(content_type: str | None) -> str | None:
    return content_type.split(";")[0].strip() if content_type else None
