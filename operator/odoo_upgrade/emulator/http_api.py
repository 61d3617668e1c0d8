"""The HTTP side: `/database/v1/<method>` and the key-bearing `/database/eu1/<id>/<key>/...` URLs.

Parameters come from the query string, an urlencoded body or multipart, on GET or POST. The
`upload` body is the dump itself, whatever its Content-Type: it is streamed to disk in chunks
and never parsed as a form.
"""

from __future__ import annotations

import asyncio
import email.utils
import html
import io
import logging
import os
import re
import uuid
import zipfile
from pathlib import Path
from typing import Any

from aiohttp import web

from odoo_upgrade.emulator.calls import CallLog
from odoo_upgrade.emulator.faults import FaultInjector
from odoo_upgrade.emulator.methods import (
    Answer,
    ApiRefusal,
    PlatformApi,
    failure,
    request_not_found,
)
from odoo_upgrade.emulator.store import RequestRecord

log = logging.getLogger(__name__)

CHUNK = 1 << 20
FORM_MAX_BYTES = 16 << 20
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
_FIXED_DATE = (1980, 1, 1, 0, 0, 0)
API_KEY: web.AppKey[PlatformApi] = web.AppKey("api", PlatformApi)
FAULTS_KEY: web.AppKey[FaultInjector] = web.AppKey("faults", FaultInjector)
CALLS_KEY: web.AppKey[CallLog] = web.AppKey("calls", CallLog)


class ConnectionCut(Exception):
    """Raised after the emulator cut a connection on purpose (`--drop-after-bytes`)."""


class HideDeliberateCuts(logging.Filter):
    """Keeps aiohttp from logging a traceback for each connection cut on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], ConnectionCut))


def _json(status: int, answer: dict[str, Any]) -> web.Response:
    return web.json_response(answer, status=status)


async def read_params(request: web.Request, *, body: bool = True) -> dict[str, str]:
    """Parameters from the query string and, unless `body` is False, an urlencoded or
    multipart body (a multipart file part, like curl's `-F ssh_keys=@file`, is read as text)."""
    params = {name: request.query.getone(name) for name in request.query}
    if body and request.method == "POST" and request.body_exists:
        content_type = request.content_type
        if content_type == "application/x-www-form-urlencoded" or content_type.startswith(
            "multipart/"
        ):
            form = await request.post()
            for name in form:
                value = form.getone(name)
                if isinstance(value, web.FileField):
                    params[name] = value.file.read().decode("utf-8", "replace")
                else:
                    params[name] = str(value)
    return params


def _cut(request: web.Request) -> None:
    """Drop the client's TCP connection right now, mid-transfer."""
    if request.transport is not None:
        request.transport.abort()
    raise ConnectionCut


async def _receive_upload(request: web.Request, record: RequestRecord) -> Answer:
    api = request.app[API_KEY]
    faults = request.app[FAULTS_KEY]
    original = api.store.original_path(record.id)
    partial = original.with_name(f".original.{uuid.uuid4().hex}.part")
    drop_at = faults.drop_point(record.id, "upload")
    received = 0
    try:
        with partial.open("wb") as out:
            while chunk := await request.content.read(CHUNK):
                if drop_at is not None and received + len(chunk) >= drop_at:
                    faults.mark_dropped(record.id, "upload")
                    log.info("upload of request %s cut after %s bytes (fault)", record.id, drop_at)
                    _cut(request)
                out.write(chunk)
                received += len(chunk)
                await faults.pace(len(chunk))
            out.flush()
            await asyncio.to_thread(os.fsync, out.fileno())
        expected = request.content_length
        if expected is not None and received != expected:
            raise ApiRefusal(
                400,
                [failure("FILE:INCOMPLETE", f"Received {received} of {expected} bytes")],
            )
        if received == 0:
            raise ApiRefusal(400, [failure("FILE:EMPTY", "The uploaded file is empty")])
        partial.replace(original)
    finally:
        partial.unlink(missing_ok=True)
    return api.finish_upload(api.store.get(record.id) or record)


async def api_method(request: web.Request) -> web.StreamResponse:
    """`/database/v1/<method>`: fault injection, then the method, then one logged call."""
    api = request.app[API_KEY]
    faults = request.app[FAULTS_KEY]
    method = request.match_info["method"]
    if faults.latency > 0:
        await asyncio.sleep(faults.latency)
    request_id: int | None = None
    status: int
    answer: dict[str, Any]
    raw_id = request.query.get("request", "")
    if raw_id.isdigit():
        request_id = int(raw_id)
    try:
        if faults.should_fail_call():
            # Answered before acting, so that a retried `create` never makes two requests.
            status, answer = (
                503,
                {"failures": [failure("SERVER:ERROR", "The server is temporarily unavailable")]},
            )
        elif method == "upload":
            record = api.begin_upload(await read_params(request, body=False))
            request_id = record.id
            status, answer = await _receive_upload(request, record)
        else:
            params = await read_params(request)
            if params.get("request", "").isdigit():
                request_id = int(params["request"])
            handler = {
                "create": api.create,
                "request_sftp_access": api.request_sftp_access,
                "process": api.process,
                "status": api.status,
                "skip_test": api.skip_test,
            }.get(method)
            if handler is None:
                status, answer = (
                    404,
                    {"failures": [failure("METHOD:NOT_FOUND", f'Unknown method "{method}"')]},
                )
            else:
                status, answer = handler(params)
                if method == "create" and "request" in answer:
                    request_id = int(answer["request"]["id"])
    except ApiRefusal as refusal:
        status, answer = refusal.answer()
    except ConnectionCut:
        request.app[CALLS_KEY].record(
            method, request_id, 499, {"failures": [{"reason": "CONNECTION:CUT"}]}
        )
        raise
    request.app[CALLS_KEY].record(method, request_id, status, answer)
    return _json(status, answer)


def _parse_range(header: str | None, size: int) -> tuple[int, int] | str | None:
    """(start, end exclusive) for one `bytes=` range; None for no/unusable header; 'bad' when
    unsatisfiable."""
    if not header:
        return None
    match = _RANGE.match(header.strip())
    if not match or match.groups() == ("", ""):
        return None  # several ranges or another unit: answer the whole file
    first, last = match.groups()
    if first == "":
        length = int(last)
        if length == 0:
            return "bad"
        return max(0, size - length), size
    start = int(first)
    end = min(size, int(last) + 1) if last else size
    if start >= size or end <= start:
        return "bad"
    return start, end


def _if_range_matches(if_range: str, etag: str, mtime: float) -> bool:
    """An entity tag matches by strong comparison (a weak one never); a date matches only
    the exact Last-Modified second."""
    if if_range.startswith(('"', "W/")):
        return if_range == etag
    try:
        date = email.utils.parsedate_to_datetime(if_range)
    except (TypeError, ValueError):
        return False
    return date.tzinfo is not None and int(date.timestamp()) == int(mtime)


async def serve_file_range(
    request: web.Request,
    path: Path,
    offset: int,
    length: int,
    *,
    transfer: str,
    record: RequestRecord,
    filename: str,
) -> web.StreamResponse:
    """Serve `length` bytes of `path` from `offset`, with Range, If-Range, HEAD and the drop
    fault; `ETag` and `Last-Modified` as a web server gives them for a file."""
    stat = await asyncio.to_thread(path.stat)
    etag = f'"{stat.st_size:x}-{stat.st_mtime_ns:x}-{offset:x}"'
    last_modified = email.utils.formatdate(stat.st_mtime, usegmt=True)
    headers = {
        "Accept-Ranges": "bytes",
        "ETag": etag,
        "Last-Modified": last_modified,
        "Content-Type": "application/octet-stream",
        "Content-Disposition": f'attachment; filename="{filename}"',
    }
    wanted = _parse_range(request.headers.get("Range"), length)
    if_range = request.headers.get("If-Range")
    if if_range is not None and not _if_range_matches(if_range.strip(), etag, stat.st_mtime):
        wanted = None  # RFC 9110 13.1.5: another version, so the whole file
    if wanted == "bad":
        headers["Content-Range"] = f"bytes */{length}"
        return web.Response(status=416, headers=headers)
    start, end = wanted if isinstance(wanted, tuple) else (0, length)
    response = web.StreamResponse(status=206 if isinstance(wanted, tuple) else 200, headers=headers)
    if isinstance(wanted, tuple):
        response.headers["Content-Range"] = f"bytes {start}-{end - 1}/{length}"
    response.content_length = end - start
    await response.prepare(request)
    if request.method == "HEAD":
        return response
    faults = request.app[FAULTS_KEY]
    drop_at = faults.drop_point(record.id, transfer)
    sent = 0
    with path.open("rb") as stream:
        stream.seek(offset + start)
        remaining = end - start
        while remaining > 0:
            chunk = await asyncio.to_thread(stream.read, min(CHUNK, remaining))
            if not chunk:
                break
            if drop_at is not None and sent + len(chunk) >= drop_at:
                await response.write(chunk[: drop_at - sent])
                faults.mark_dropped(record.id, transfer)
                log.info("download of request %s cut after %s bytes (fault)", record.id, drop_at)
                _cut(request)
            await response.write(chunk)
            sent += len(chunk)
            remaining -= len(chunk)
    await response.write_eof()
    return response


def _empty_modules_archive() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(
            zipfile.ZipInfo("README.txt", date_time=_FIXED_DATE),
            "No custom modules were uploaded with this request.\n",
        )
    return buffer.getvalue()


async def key_url(request: web.Request) -> web.StreamResponse:
    """`/database/eu1/<id>/<key>/<what>`: pages and files of one request, key checked first."""
    api = request.app[API_KEY]
    try:
        record = api.authenticate(request.match_info["id"], request.match_info["key"])
    except ApiRefusal:
        return _json(*request_not_found().answer())
    what = request.match_info["what"]
    log.info("%s %s request=%s", request.method, what, record.id)
    view = api.store.view(record)
    store = api.store
    ready = store.upgraded_ready(record) and store.upgraded_path(record.id).exists()
    not_ready = web.json_response(
        {"failures": [failure("FILE:NOT_READY", f'Not available in state "{view.state}"')]},
        status=404,
    )
    stem = record.filename.rsplit(".", 1)[0]
    if what == "status":
        page = (
            f"<html><body><h1>Upgrade request {record.id}</h1>"
            f"<p>State: {html.escape(view.state)}</p></body></html>"
        )
        return web.Response(text=page, content_type="text/html")
    if what == "upgraded/notes":
        if not ready:
            return not_ready
        page = (
            f"<html><body><h1>Upgrade notes</h1><p>Database upgraded to "
            f"{html.escape(record.target)}.</p></body></html>"
        )
        return web.Response(text=page, content_type="text/html")
    if what == "modules/archive":
        return web.Response(body=_empty_modules_archive(), content_type="application/zip")
    if what in ("original/archive", "original/sql"):
        size = store.original_size(record.id)
        if size is None:
            return not_ready
        return await serve_file_range(
            request,
            store.original_path(record.id),
            0,
            size,
            transfer=f"download:{what}",
            record=record,
            filename=record.filename,
        )
    if what in ("upgraded/archive", "upgraded/sql"):
        if not ready or record.upgraded is None:
            return not_ready
        archive = store.upgraded_path(record.id)
        if what == "upgraded/archive":
            return await serve_file_range(
                request,
                archive,
                0,
                archive.stat().st_size,
                transfer=f"download:{what}",
                record=record,
                filename=f"upgraded_{record.filename}",
            )
        return await serve_file_range(
            request,
            archive,
            record.upgraded["sql_offset"],
            record.upgraded["sql_length"],
            transfer=f"download:{what}",
            record=record,
            filename=f"upgraded_{stem}.sql",
        )
    return web.json_response({"failures": [failure("URL:NOT_FOUND", "No such page")]}, status=404)


def build_app(api: PlatformApi, faults: FaultInjector, calls: CallLog) -> web.Application:
    """The aiohttp application serving the v1 API and the key-bearing URLs."""
    logging.getLogger("aiohttp.server").addFilter(HideDeliberateCuts())
    app = web.Application(client_max_size=FORM_MAX_BYTES)
    app[API_KEY] = api
    app[FAULTS_KEY] = faults
    app[CALLS_KEY] = calls
    app.router.add_route("*", "/database/v1/{method}", api_method)
    app.router.add_get("/database/eu1/{id}/{key}/{what:.+}", key_url)
    return app
