"""Async client of the Upgrade Platform v1 API (`/database/v1/<method>`).

Every answer is `{"failures": [...], "request": {...}}`; HTTP status codes are not documented,
so the `failures` list decides. Transient trouble (network, timeouts, 5xx, `SERVER:ERROR`) is
retried with backoff; `create` only when the platform surely did not act on it, because a
second `create` opens a second request.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from types import TracebackType
from typing import Any

import httpx

from odoo_upgrade.platform.errors import (
    Failure,
    PlatformError,
    PlatformFailure,
    PlatformNotReached,
    PlatformOutcomeUnknown,
    PlatformProtocolError,
    PlatformServerError,
    PlatformUnavailable,
    platform_surely_did_not_act,
)
from odoo_upgrade.platform.models import SftpAccess, UpgradeRequest
from odoo_upgrade.platform.retry import RetryPolicy, retry_async
from odoo_upgrade.redact import redact, redact_library_loggers, register_secret
from odoo_upgrade.request.platform import DEFAULT_PLATFORM_URL

DEFAULT_BASE_URL = DEFAULT_PLATFORM_URL
# Answers are small JSON objects; a peer that sends more is broken or hostile.
MAX_ANSWER_BYTES = 1024 * 1024

log = logging.getLogger("odoo_upgrade.platform")

# httpx logs every request URL at INFO; upload and request_sftp_access carry the key there.
redact_library_loggers()


def _redacted_failure(data: object) -> Failure:
    """A failure as sent, minus secrets: messages may echo the contract or the key."""
    failure = Failure.from_json(data if isinstance(data, dict) else {"message": str(data)})
    return dataclasses.replace(
        failure,
        message=redact(failure.message),
        code=None if failure.code is None else redact(failure.code),
        value=None if failure.value is None else redact(failure.value),
    )


def parse_answer(method: str, status_code: int, body: bytes) -> dict[str, Any]:
    """Turn one HTTP answer into the JSON dictionary, or raise the matching `PlatformError`.

    Non-empty `failures` win over the status code; a 5xx without them is `PlatformUnavailable`;
    anything else that is not a JSON object is `PlatformProtocolError`.
    """
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        data = None
    failures = data.get("failures") if isinstance(data, dict) else None
    if isinstance(failures, list) and failures:
        raise PlatformFailure(method, [_redacted_failure(f) for f in failures])
    if status_code >= 500 or status_code == 429:
        raise PlatformServerError(
            f"{method}: the platform answered HTTP {status_code}", status_code=status_code
        )
    if not isinstance(data, dict):
        raise PlatformProtocolError(
            f"{method}: expected a JSON object, got HTTP {status_code} "
            f"with {len(body)} bytes that are not one"
        )
    if status_code >= 400:
        raise PlatformProtocolError(f"{method}: HTTP {status_code} without failures")
    return data


def transport_error(method: str, exc: httpx.TransportError) -> PlatformUnavailable:
    """Wrap an httpx error in a `PlatformUnavailable` whose text cannot leak the key.

    httpx messages may quote the URL (with `key=`), so the text is redacted and the caller
    raises it `from None`.
    """
    detail = redact(f"{type(exc).__name__}: {exc}".rstrip(": "))
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout):
        return PlatformNotReached(f"{method}: could not reach the platform ({detail})")
    return PlatformUnavailable(f"{method}: no usable answer from the platform ({detail})")


def is_transient(exc: BaseException) -> bool:
    """Whether retrying can help (network trouble, 5xx, `SERVER:ERROR`)."""
    return isinstance(exc, PlatformError) and exc.transient


async def read_capped(method: str, response: httpx.Response) -> bytes:
    """The body of an answer, refused beyond `MAX_ANSWER_BYTES`."""
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > MAX_ANSWER_BYTES:
            raise PlatformProtocolError(
                f"{method}: the answer exceeds {MAX_ANSWER_BYTES} bytes; refusing to read more"
            )
    return bytes(body)


def checked_base_url(base_url: str) -> str:
    """The platform base URL without trailing slash; a clear ValueError if it is no URL."""
    if not base_url.startswith(("https://", "http://")):
        raise ValueError(
            "platform URL must start with https:// (or http:// for a local emulator), "
            f"got {redact(base_url)!r}"
        )
    return base_url.rstrip("/")


def _request_dict(method: str, data: dict[str, Any]) -> dict[str, Any]:
    request = data.get("request")
    if not isinstance(request, dict):
        raise PlatformProtocolError(f"{method}: the answer has no `request` object")
    return request


class PlatformClient:
    """Client of one Upgrade Platform; use as `async with PlatformClient(url) as client:`."""

    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        *,
        timeout: float = 60.0,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.base_url = checked_base_url(base_url)
        self.retry = retry or RetryPolicy()
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout, connect=min(timeout, 15.0)),
            headers={"Accept": "application/json"},
        )

    async def __aenter__(self) -> PlatformClient:
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
        """The URL of an API method: `<base>/database/v1/<method>`."""
        return f"{self.base_url}/database/v1/{method}"

    async def create(
        self,
        *,
        contract: str,
        email: str,
        target: str,
        aim: str,
        filename: str,
        timezone: str | None = None,
    ) -> UpgradeRequest:
        """Open a new upgrade request. Retried only when the platform surely did not act."""
        register_secret(contract)
        form = {
            "contract": contract,
            "email": email,
            "target": target,
            "aim": aim,
            "filename": filename,
        }
        if timezone:
            form["timezone"] = timezone
        data = await self._call("create", None, data=form, idempotent=False)
        answer = _request_dict("create", data)
        register_secret(str(answer.get("key") or ""))
        try:
            return UpgradeRequest.from_json(answer)
        except (KeyError, TypeError, ValueError) as exc:
            raise PlatformProtocolError(
                f"create: the answer lacks a usable request id or key ({type(exc).__name__})"
            ) from None

    async def request_sftp_access(self, request_id: int, key: str, ssh_keys: str) -> SftpAccess:
        """Open the SFTP server for this request, letting in the given authorized_keys text."""
        data = await self._call(
            "request_sftp_access",
            request_id,
            key=key,
            params={"request": str(request_id), "key": key},
            files={"ssh_keys": ("authorized_keys", ssh_keys.encode(), "text/plain")},
        )
        try:
            return SftpAccess.from_json(_request_dict("request_sftp_access", data))
        except (KeyError, TypeError, ValueError) as exc:
            raise PlatformProtocolError(
                f"request_sftp_access: incomplete SFTP access in the answer ({exc!r})"
            ) from None

    async def process(self, request_id: int, key: str) -> None:
        """Ask the platform to start upgrading the uploaded dump."""
        await self._call("process", request_id, key=key)

    async def status(self, request_id: int, key: str) -> UpgradeRequest:
        """The request as the platform sees it now."""
        data = await self._call("status", request_id, key=key)
        try:
            return UpgradeRequest.from_json(_request_dict("status", data))
        except (KeyError, TypeError, ValueError) as exc:
            raise PlatformProtocolError(
                f"status: malformed request in the answer ({exc!r})"
            ) from None

    async def skip_test(self, request_id: int, key: str) -> None:
        """Skip the test phase of a production request (the request becomes `delivered`)."""
        await self._call("skip_test", request_id, key=key)

    async def _call(
        self,
        method: str,
        request_id: int | None,
        *,
        key: str | None = None,
        data: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
        files: dict[str, tuple[str, bytes, str]] | None = None,
        idempotent: bool = True,
    ) -> dict[str, Any]:
        register_secret(key)
        if data is None and files is None and key is not None:
            data = {"request": str(request_id), "key": key}

        async def once() -> dict[str, Any]:
            outcome = "ok"
            try:
                return await self._post_once(method, data=data, params=params, files=files)
            except PlatformError as exc:
                outcome = type(exc).__name__
                raise
            finally:
                log.debug("platform %s request=%s: %s", method, request_id, outcome)

        retryable = is_transient if idempotent else platform_surely_did_not_act
        try:
            result, _ = await retry_async(self.retry, once, retryable=retryable)
        except PlatformFailure as exc:
            if exc.transient:
                # SERVER:ERROR on every try: as unavailable as a 5xx, say so in one type.
                raise PlatformServerError(
                    f"{exc} (still failing after {self.retry.attempts} attempts)"
                ) from None
            raise
        except PlatformUnavailable as exc:
            if not idempotent and not platform_surely_did_not_act(exc):
                raise PlatformOutcomeUnknown(
                    f"{method}: sent, but no answer came back ({exc}); the outcome is unknown "
                    "and it is not retried automatically (it could open a second request)"
                ) from None
            raise
        return result

    async def _post_once(
        self,
        method: str,
        *,
        data: dict[str, str] | None,
        params: dict[str, str] | None,
        files: dict[str, tuple[str, bytes, str]] | None,
    ) -> dict[str, Any]:
        try:
            async with self._http.stream(
                "POST", self.method_url(method), data=data, params=params, files=files
            ) as response:
                body = await read_capped(method, response)
        except httpx.TransportError as exc:
            raise transport_error(method, exc) from None
        return parse_answer(method, response.status_code, body)
