"""Async client of today's Upgrade Platform API (`/upgrade/request/*`, JSON-RPC over POST).

`create` goes to the platform's base URL; its answer names `assigned_host_uri`, and every later
call for the request goes to `https://<assigned_host_uri>` (`request_base_url`). A call fails
in one of three ways: `result.error` (a string) or a JSON-RPC `error` object (the platform
refused: `PlatformFailure`, permanent), or HTTP 5xx / timeouts (transient, retried). `create`
is retried only when the platform surely did not act, as in v1 (`platform_surely_did_not_act`).
The token is the request's only secret after `create`: registered for redaction at once.
"""

from __future__ import annotations

import codecs
import json
import logging
import re
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx

from odoo_upgrade.platform.client import (
    DEFAULT_BASE_URL,
    is_transient,
    read_capped,
    transport_error,
)
from odoo_upgrade.platform.errors import (
    Failure,
    PlatformError,
    PlatformFailure,
    PlatformOutcomeUnknown,
    PlatformProtocolError,
    PlatformServerError,
    PlatformUnavailable,
    platform_surely_did_not_act,
)
from odoo_upgrade.platform.retry import RetryPolicy, retry_async
from odoo_upgrade.redact import redact, redact_library_loggers, register_secret
from odoo_upgrade.request.states import UPGRADE_REQUEST_STATES, StateClass
from odoo_upgrade.request.upgraded import DEFAULT_DUMP_NAME

log = logging.getLogger("odoo_upgrade.platform.upgrade_request")

# httpx logs every URL at INFO; the logs URL carries the token in its query string.
redact_library_loggers()

API_PREFIX = "/upgrade/request"
API_VERSION = "0.2"
ACTUATOR = "cli"
AIMS = ("test", "production")
TRANSFER_TYPES = ("upload", "download")
# One `logs` call returns at most this much; the caller asks again from `next_offset`.
MAX_LOG_CHUNK_BYTES = 1 << 20

# Reasons of the failures this client builds from JSON-RPC answers (the API has no codes).
REASON_RESULT_ERROR = "REQUEST:ERROR"
REASON_JSONRPC_ERROR = "JSONRPC:ERROR"

TransferType = Literal["upload", "download"]
_reported_states: set[str] = set()

_HOST_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_ASSIGNED_HOST = re.compile(
    rf"^(?:{_HOST_LABEL}(?:\.{_HOST_LABEL})*|\[[0-9A-Fa-f:.]+\])(?::(\d{{1,5}}))?$"
)


# -- where calls go: pure functions ---------------------------------------------------------


def checked_assigned_host(assigned_host_uri: str) -> str:
    """`assigned_host_uri` if it is a bare `host[:port]`; else `PlatformProtocolError`.

    A scheme, user info or path would let an answer redirect later calls (and the token)
    elsewhere than `https://<host>`; they are refused, not repaired.
    """
    value = assigned_host_uri.strip()
    match = _ASSIGNED_HOST.match(value)
    if not match or (match.group(1) is not None and not 0 < int(match.group(1)) < 65536):
        raise PlatformProtocolError(
            f"create: assigned_host_uri must be a bare host[:port] such as "
            f"'upgrade-p1.odoo.com', got {redact(value)[:80]!r}"
        )
    return value.lower()


def host_of(assigned_host_uri: str) -> str:
    """The host name of `host[:port]` (brackets of an IPv6 address removed): what SSH dials."""
    value = checked_assigned_host(assigned_host_uri)
    if value.startswith("["):
        return value[1 : value.index("]")]
    return value.rsplit(":", 1)[0] if ":" in value else value


def checked_platform_url(base_url: str, allow_insecure_hosts: frozenset[str]) -> str:
    """The base URL without trailing slash: https, or http for a host the caller allowed.

    `allow_insecure_hosts` holds `host:port` names (lower case) that may be spoken to in plain
    http, e.g. a local emulator; nothing is allowed implicitly.
    """
    parts = urlsplit(base_url.strip())
    netloc = parts.netloc.lower()
    if parts.scheme == "http" and netloc not in allow_insecure_hosts:
        raise ValueError(
            f"platform URL {redact(base_url)!r} is plain http: only https is allowed, unless "
            f"its host:port ({netloc}) is in allow_insecure_hosts"
        )
    if parts.scheme not in ("https", "http") or not netloc:
        raise ValueError(f"platform URL must start with https://, got {redact(base_url)!r}")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise ValueError("platform URL must not carry user info, a query or a fragment")
    return base_url.strip().rstrip("/")


def request_base_url(
    base_url: str, assigned_host_uri: str | None, allow_insecure_hosts: frozenset[str]
) -> str:
    """Where a call goes: `https://<assigned_host_uri>` once known, else the platform base.

    Plain http only for an assigned host the caller listed in `allow_insecure_hosts`.
    """
    if assigned_host_uri is None:
        return checked_platform_url(base_url, allow_insecure_hosts)
    host = checked_assigned_host(assigned_host_uri)
    scheme = "http" if host in allow_insecure_hosts else "https"
    return f"{scheme}://{host}"


def jsonrpc_envelope(params: dict[str, Any]) -> dict[str, Any]:
    """The JSON-RPC 2.0 envelope every call is wrapped in (method and id are not used)."""
    return {"jsonrpc": "2.0", "method": "not_used", "params": params, "id": "not_used"}


# -- answers --------------------------------------------------------------------------------


def _failure(
    reason: str, message: object, *, code: str | None = None, value: str | None = None
) -> Failure:
    """A failure built from an answer, its texts redacted (messages may echo secrets)."""
    return Failure(
        reason=reason,
        message=redact(str(message))[:2000],
        code=code,
        value=None if value is None else redact(value),
    )


def parse_jsonrpc_answer(method: str, status_code: int, body: bytes) -> dict[str, Any]:
    """One HTTP answer -> the `result` object, or the matching `PlatformError`.

    `result.error` and a JSON-RPC `error` are refusals (`PlatformFailure`, permanent); 5xx and
    429 are `PlatformServerError` (transient; only 503 and 429 say the platform did not act,
    see `platform_surely_did_not_act`); anything else that is not the documented shape is
    `PlatformProtocolError`.
    """
    if status_code >= 500 or status_code == 429:
        raise PlatformServerError(
            f"{method}: the platform answered HTTP {status_code}", status_code=status_code
        )
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise PlatformProtocolError(
            f"{method}: expected a JSON-RPC answer, got HTTP {status_code} with "
            f"{len(body)} bytes that are not JSON"
        ) from None
    if not isinstance(data, dict):
        raise PlatformProtocolError(f"{method}: the answer is not a JSON object")
    error = data.get("error")
    if error is not None:
        raise PlatformFailure(method, [_jsonrpc_failure(error)])
    result = data.get("result")
    if status_code >= 400 or not isinstance(result, dict):
        raise PlatformProtocolError(
            f"{method}: HTTP {status_code} without a `result` object (is this an "
            "upgrade/request platform?)"
        )
    if result.get("error"):
        raise PlatformFailure(method, [_failure(REASON_RESULT_ERROR, result["error"])])
    return result


def _jsonrpc_failure(error: object) -> Failure:
    if not isinstance(error, dict):
        return _failure(REASON_JSONRPC_ERROR, error)
    data = error.get("data")
    message = data.get("message") if isinstance(data, dict) else None
    name = data.get("name") if isinstance(data, dict) else None
    return _failure(
        REASON_JSONRPC_ERROR,
        message or error.get("message") or "JSON-RPC error without a message",
        code=None if error.get("code") is None else str(error.get("code")),
        value=None if name is None else str(name),
    )


def _required_str(method: str, result: dict[str, Any], name: str) -> str:
    value = result.get(name)
    if not isinstance(value, str | int) or isinstance(value, bool) or str(value) == "":
        raise PlatformProtocolError(f"{method}: the answer lacks `{name}`")
    return str(value)


def _optional_str(value: object) -> str | None:
    return None if value is None or value == "" else str(value)


@dataclass(frozen=True)
class CreatedRequest:
    """What `create` answers. `token` is a secret: store it in the request Secret only."""

    request_id: int
    token: str = field(repr=False)
    assigned_host_uri: str
    info: str | None = None

    @classmethod
    def from_result(cls, result: dict[str, Any]) -> CreatedRequest:
        token = _required_str("create", result, "token")
        register_secret(token)
        raw_id = _required_str("create", result, "request_id")
        if not raw_id.isdigit():
            raise PlatformProtocolError("create: request_id in the answer is not a number")
        return cls(
            request_id=int(raw_id),
            token=token,
            assigned_host_uri=checked_assigned_host(
                _required_str("create", result, "assigned_host_uri")
            ),
            info=None if result.get("info") is None else redact(str(result["info"])),
        )


@dataclass(frozen=True)
class TransferWindow:
    """An SSH port opened by `transfer/start`, the host keys to trust on it, and for downloads
    the name of the upgraded dump under `/data/`."""

    ssh_port: int
    known_hosts: str
    dump_name: str | None = None

    @classmethod
    def from_result(cls, transfer_type: str, result: dict[str, Any]) -> TransferWindow:
        method = "transfer/start"
        port = result.get("ssh_port")
        if isinstance(port, str) and port.isdigit():
            port = int(port)
        if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
            raise PlatformProtocolError(f"{method}: the answer lacks a usable `ssh_port`")
        known_hosts = result.get("known_hosts")
        if isinstance(known_hosts, list):
            known_hosts = "\n".join(str(line) for line in known_hosts)
        if not isinstance(known_hosts, str) or not known_hosts.strip():
            raise PlatformProtocolError(f"{method}: the answer lacks `known_hosts`")
        dump_name = None
        if transfer_type == "download":
            dump_name = checked_dump_name(str(result.get("dump_name") or DEFAULT_DUMP_NAME))
        text = "\n".join(line.strip() for line in known_hosts.splitlines() if line.strip())
        return cls(ssh_port=port, known_hosts=text + "\n", dump_name=dump_name)


def checked_dump_name(name: str) -> str:
    """`dump_name` if it is one plain file name (it becomes a path under `/data/` and ours)."""
    if (
        not name
        or name in (".", "..")
        or "/" in name
        or "\\" in name
        or name.startswith(("-", "."))
        or any(ord(c) < 32 for c in name)
    ):
        raise PlatformProtocolError(f"transfer/start: dump_name {name[:80]!r} is not a file name")
    return name


@dataclass(frozen=True)
class RequestStatus:
    """What `status` answers. Unknown states count as still in progress (and are logged)."""

    status: str
    host_uri: str | None = None
    reason: str | None = None
    archived: bool = False

    @classmethod
    def from_result(cls, result: dict[str, Any]) -> RequestStatus:
        status = _required_str("status", result, "status")
        if not UPGRADE_REQUEST_STATES.is_known(status) and status not in _reported_states:
            _reported_states.add(status)  # once per value: status is polled every few seconds
            log.warning(
                "the platform reports an unknown state %r; treating it as in progress", status
            )
        return cls(
            status=status,
            host_uri=_optional_str(result.get("host_uri")),
            reason=None if result.get("reason") in (None, "") else redact(str(result["reason"])),
            archived=bool(result.get("archived")),
        )

    @property
    def in_progress(self) -> bool:
        return not UPGRADE_REQUEST_STATES.is_final(self.status)

    @property
    def succeeded(self) -> bool:
        return UPGRADE_REQUEST_STATES.classify(self.status) is StateClass.SUCCEEDED

    def public_view(self) -> dict[str, Any]:
        """What may be shown in `.status.platform` (nothing here is a secret)."""
        view: dict[str, Any] = {"status": self.status, "archived": self.archived}
        if self.reason is not None:
            view["reason"] = self.reason
        if self.host_uri is not None:
            view["hostUri"] = self.host_uri
        return view


@dataclass(frozen=True)
class WipeResult:
    """What `wipe` answers: what was deleted for the contract, and what could not be."""

    wiped: list[str]
    failed: list[str]


def _str_list(value: object) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else []


def _content_range_start(header: str | None) -> int | None:
    match = re.match(r"^\s*bytes\s+(\d+)-\d+/(?:\d+|\*)\s*$", header or "")
    return int(match.group(1)) if match else None


def _complete_utf8(data: bytes) -> bytes:
    """`data` without a trailing incomplete UTF-8 sequence (the next call starts with it)."""
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    decoder.decode(data, final=False)
    pending = len(decoder.getstate()[0])
    return data[: len(data) - pending] if pending else data


# -- the client -----------------------------------------------------------------------------


class UpgradeRequestClient:
    """Client of one platform's `upgrade/request` API; `async with UpgradeRequestClient(...)`.

    `assigned_host_uri` is the host `create` assigned (pass it when resuming a request after a
    restart); until it is known, calls go to `base_url`. `allow_insecure_hosts` lists
    `host:port` names that may be spoken to in plain http (a local emulator); nothing else is.
    """

    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        *,
        assigned_host_uri: str | None = None,
        allow_insecure_hosts: Iterable[str] = frozenset(),
        timeout: float = 60.0,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.allow_insecure_hosts = frozenset(h.lower() for h in allow_insecure_hosts)
        self.base_url = checked_platform_url(base_url, self.allow_insecure_hosts)
        self.assigned_host_uri = (
            None if assigned_host_uri is None else checked_assigned_host(assigned_host_uri)
        )
        self.retry = retry or RetryPolicy()
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout, connect=min(timeout, 15.0)),
            headers={"Accept": "application/json"},
            follow_redirects=False,  # a redirect could take the token to another host
        )

    async def __aenter__(self) -> UpgradeRequestClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    def method_url(self, method: str) -> str:
        """`<where calls go now>/upgrade/request/<method>` (see `request_base_url`)."""
        base = request_base_url(self.base_url, self.assigned_host_uri, self.allow_insecure_hosts)
        return f"{base}{API_PREFIX}/{method}"

    @property
    def request_host(self) -> str:
        """`host[:port]` the request's calls (and its SSH transfers) go to now."""
        base = request_base_url(self.base_url, self.assigned_host_uri, self.allow_insecure_hosts)
        return urlsplit(base).netloc

    # -- calls ------------------------------------------------------------------------------

    async def create(
        self,
        *,
        contract: str,
        target: str,
        aim: str,
        env_vars: Iterable[str] = (),
        ssh_key: str,
    ) -> CreatedRequest:
        """Open a request (always at `base_url`); later calls then go to its assigned host.

        Retried only when the platform surely did not act; a `create` sent without an answer
        raises `PlatformOutcomeUnknown` (never sent twice: it could open a second request).
        """
        register_secret(contract)
        if aim not in AIMS:
            raise ValueError(f"aim must be one of {', '.join(AIMS)}, got {aim!r}")
        variables = [str(v) for v in env_vars]
        for variable in variables:
            if "=" not in variable or variable.startswith("="):
                raise ValueError(f"env_vars entries must look like VAR=VALUE, got {variable!r}")
        params = {
            "contract": contract,
            "target": target,
            "aim": aim,
            "actuator": ACTUATOR,
            "env_vars": variables,
            "ssh_key": ssh_key.strip(),
            "api_version": API_VERSION,
        }
        base = checked_platform_url(self.base_url, self.allow_insecure_hosts)
        result = await self._call("create", params, url=f"{base}{API_PREFIX}/create", once=True)
        try:
            created = CreatedRequest.from_result(result)
        except PlatformProtocolError as exc:
            raise PlatformProtocolError(
                f"{exc}; the platform may have opened a request all the same"
            ) from None
        self.assigned_host_uri = created.assigned_host_uri
        return created

    async def transfer_start(self, token: str, transfer_type: TransferType) -> TransferWindow:
        """Open the request's SSH port for one `upload` or `download` (then `transfer_stop`)."""
        if transfer_type not in TRANSFER_TYPES:
            raise ValueError(f"transfer_type must be upload or download, got {transfer_type!r}")
        result = await self._call(
            "transfer/start", {"token": token, "transfer_type": transfer_type}, token=token
        )
        return TransferWindow.from_result(transfer_type, result)

    async def transfer_stop(self, token: str) -> None:
        """Close the transfer window opened by `transfer_start`."""
        await self._call("transfer/stop", {"token": token}, token=token)

    @asynccontextmanager
    async def transfer_window(
        self, token: str, transfer_type: TransferType
    ) -> AsyncIterator[TransferWindow]:
        """`transfer/start` ... `transfer/stop` around a transfer; stop is always called.

        A failing stop after a failed transfer is logged, not raised (the transfer's error is
        the one that matters); after a successful transfer it is raised.
        """
        window = await self.transfer_start(token, transfer_type)
        try:
            yield window
        except BaseException:
            try:
                await self.transfer_stop(token)
            except Exception as exc:
                log.warning("transfer/stop after a failed %s failed too: %s", transfer_type, exc)
            raise
        await self.transfer_stop(token)

    async def process(self, token: str) -> bool | None:
        """Start the upgrade of the uploaded dump; `is_pg_version_compatible` (None: not said).

        False means the upgraded dump cannot be restored on the client's PostgreSQL. Retried
        only when the platform surely did not act: if the answer is lost, `status` tells
        whether processing started (`PlatformUnavailable` is raised).
        """
        result = await self._call(
            "process", {"token": token}, token=token, retryable=platform_surely_did_not_act
        )
        compatible = result.get("is_pg_version_compatible")
        return None if compatible is None else bool(compatible)

    async def status(self, token: str) -> RequestStatus:
        """The request as the platform sees it now."""
        return RequestStatus.from_result(await self._call("status", {"token": token}, token=token))

    async def wipe(self, contract: str, token: str) -> WipeResult:
        """Delete the dumps the platform keeps for `contract` (needs one of its tokens)."""
        register_secret(contract)
        result = await self._call("wipe", {"contract": contract, "token": token}, token=token)
        return WipeResult(
            wiped=_str_list(result.get("wiped")), failed=_str_list(result.get("failed"))
        )

    async def logs(self, token: str, from_byte: int = 0) -> tuple[str, int]:
        """The upgrade log from byte `from_byte`: `(text, next_offset)`; ask again from there.

        At most `MAX_LOG_CHUNK_BYTES` per call; nothing new yet is `("", from_byte)`.
        """
        if from_byte < 0:
            raise ValueError(f"from_byte must be >= 0, got {from_byte}")
        register_secret(token)

        async def once() -> tuple[str, int]:
            return await self._logs_once(token, from_byte)

        result, _ = await retry_async(self.retry, once, retryable=is_transient)
        return result

    # -- transport --------------------------------------------------------------------------

    async def _logs_once(self, token: str, from_byte: int) -> tuple[str, int]:
        try:
            async with self._http.stream(
                "GET",
                self.method_url("logs"),
                params={"token": token},
                headers={"Range": f"bytes={from_byte}-", "Accept": "text/plain"},
            ) as response:
                status_code = response.status_code
                if status_code == 416:  # nothing beyond from_byte yet
                    return "", from_byte
                body = await _read_log_chunk(response)
                content_range = response.headers.get("Content-Range")
        except httpx.TransportError as exc:
            raise transport_error("logs", exc) from None
        if status_code >= 500 or status_code == 429:
            raise PlatformServerError(
                f"logs: the platform answered HTTP {status_code}", status_code=status_code
            )
        if status_code >= 400:
            text = body[:2000].decode("utf-8", "replace").strip() or f"HTTP {status_code}"
            raise PlatformFailure(
                "logs", [_failure(REASON_RESULT_ERROR, text, code=str(status_code))]
            )
        if status_code == 206:
            start = _content_range_start(content_range)
            if start is None or start > from_byte:
                raise PlatformProtocolError(
                    f"logs: asked from byte {from_byte}, got a 206 with Content-Range "
                    f"{(content_range or 'missing')[:60]!r}"
                )
            body = body[from_byte - start :]
        elif status_code == 200:
            body = body[from_byte:]  # the server ignored Range and sent the log from byte 0
        else:
            raise PlatformProtocolError(f"logs: unexpected HTTP {status_code}")
        body = _complete_utf8(body)
        return body.decode("utf-8", "replace"), from_byte + len(body)

    async def _call(
        self,
        method: str,
        params: dict[str, Any],
        *,
        token: str | None = None,
        url: str | None = None,
        once: bool = False,
        retryable: Callable[[BaseException], bool] = is_transient,
    ) -> dict[str, Any]:
        register_secret(token)
        target = url or self.method_url(method)
        body = jsonrpc_envelope(params)

        async def attempt() -> dict[str, Any]:
            outcome = "ok"
            try:
                return await self._post_once(method, target, body)
            except PlatformError as exc:
                outcome = type(exc).__name__
                raise
            finally:
                log.debug("upgrade/request %s: %s", method, outcome)

        rule = platform_surely_did_not_act if once else retryable
        try:
            result, _ = await retry_async(self.retry, attempt, retryable=rule)
        except PlatformUnavailable as exc:
            if once and not platform_surely_did_not_act(exc):
                raise PlatformOutcomeUnknown(
                    f"{method}: sent, but no answer came back ({exc}); the outcome is unknown "
                    "and it is not retried automatically (it could open a second request)"
                ) from None
            raise
        return result

    async def _post_once(self, method: str, url: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            async with self._http.stream("POST", url, json=body) as response:
                content = await read_capped(method, response)
                status_code = response.status_code
        except httpx.TransportError as exc:
            raise transport_error(method, exc) from None
        return parse_jsonrpc_answer(method, status_code, content)


async def _read_log_chunk(response: httpx.Response) -> bytes:
    """At most `MAX_LOG_CHUNK_BYTES` of a log answer (the rest is asked for next time)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        chunks.append(chunk)
        size += len(chunk)
        if size >= MAX_LOG_CHUNK_BYTES:
            break
    return b"".join(chunks)[:MAX_LOG_CHUNK_BYTES]
