"""Today's API, `/upgrade/request/*`: JSON-RPC methods, the log by byte range, an admin cancel.

Every method is a POST with a JSON-RPC 2.0 envelope; its answer is `{"result": {...}}`, with
`result.error` (a string) when the platform refuses, or a JSON-RPC `error` object for a broken
envelope or an unknown token. `assigned_host_uri` is the emulator's own `host:port` (or
`--assigned-host`), so clients exercise the switch to the request's host. `transfer/start`
opens an SSH endpoint per request (`rsync_endpoint.py`). Test hook, outside the API:
`POST /emulator/requests/<request_id>/cancel` cancels a request that is not final yet.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from odoo_upgrade.emulator.calls import CallLog
from odoo_upgrade.emulator.config import EmulatorConfig
from odoo_upgrade.emulator.faults import FaultInjector
from odoo_upgrade.emulator.methods import ApiRefusal, parse_ssh_keys
from odoo_upgrade.emulator.request_store import (
    DUMP_NAMES,
    FINAL_STATES,
    UpgradeRequestRecord,
    UpgradeRequestStore,
    digest,
)
from odoo_upgrade.emulator.rsync_endpoint import TransferWindows
from odoo_upgrade.request.upgraded import DEFAULT_DUMP_NAME

log = logging.getLogger(__name__)

PREFIX = "/upgrade/request"
MAX_BODY_BYTES = 1 << 20
AIMS = ("test", "production")
TRANSFER_TYPES = ("upload", "download")
PRODUCTION_INFO = (
    "This is a production request: the upgraded database is meant to replace the original."
)
_SAAS_TARGET = re.compile(r"^saas~\d+\.\d+$")
_RANGE = re.compile(r"^bytes=(\d+)-$")


@dataclass
class RequestRefusal(Exception):
    """A refusal answered as `result.error`; `reason` is what calls.jsonl records."""

    reason: str
    message: str


@dataclass
class JsonRpcFault(Exception):
    """A refusal answered as a JSON-RPC `error` object (broken envelope, unknown token)."""

    reason: str
    message: str
    name: str = "odoo.exceptions.UserError"


def _text(params: dict[str, Any], name: str) -> str:
    value = params.get(name)
    if not isinstance(value, str) or not value.strip():
        raise RequestRefusal("PARAM:MISSING", f'Missing required parameter "{name}"')
    return value.strip()


class RequestApi:
    """The `upgrade/request` methods over an `UpgradeRequestStore` and the transfer windows."""

    def __init__(
        self, config: EmulatorConfig, store: UpgradeRequestStore, windows: TransferWindows
    ) -> None:
        self.config = config
        self.store = store
        self.windows = windows
        self.assigned_host = config.assigned_host or f"{config.host}:{config.port}"

    def set_bound_port(self, port: int) -> None:
        """Name the host:port actually bound (port 0 binds any) unless told otherwise."""
        if self.config.assigned_host:
            self.assigned_host = self.config.assigned_host
        elif self.config.public_url:
            self.assigned_host = urlsplit(self.config.public_url).netloc
        else:
            self.assigned_host = f"{self.config.host}:{port}"

    @property
    def ssh_hostname(self) -> str:
        """The host name clients dial for SSH: the assigned host without its port."""
        host = self.assigned_host
        if host.startswith("["):
            return host[1 : host.index("]")]
        return host.rsplit(":", 1)[0] if ":" in host else host

    def record_for(self, params: dict[str, Any]) -> UpgradeRequestRecord:
        token = params.get("token")
        record = self.store.by_token(token) if isinstance(token, str) and token else None
        if record is None:
            raise JsonRpcFault(
                "TOKEN:INVALID",
                "No upgrade request matches this token",
                "werkzeug.exceptions.Forbidden",
            )
        return record

    # -- methods ----------------------------------------------------------------------------

    def create(self, params: dict[str, Any]) -> dict[str, Any]:
        contract = _text(params, "contract")
        if contract not in self.config.contracts:
            raise RequestRefusal("CONTRACT:NOT_FOUND", "Unknown or expired contract")
        target = _text(params, "target")
        base_target = target.removeprefix("saas~")
        if target not in self.config.targets and not (
            _SAAS_TARGET.match(target) and f"{base_target.split('.')[0]}.0" in self.config.targets
        ):
            raise RequestRefusal(
                "TARGET:INVALID",
                f'Invalid target version "{target}"; expected one of '
                f"{', '.join(self.config.targets)}",
            )
        aim = _text(params, "aim")
        if aim not in AIMS:
            raise RequestRefusal("AIM:INVALID", f'Invalid aim "{aim}"; expected test or production')
        env_vars = params.get("env_vars") or []
        if not isinstance(env_vars, list) or not all(
            isinstance(v, str) and "=" in v and not v.startswith("=") for v in env_vars
        ):
            raise RequestRefusal("ENV_VARS:INVALID", 'env_vars must be a list of "VAR=VALUE"')
        try:
            keys = parse_ssh_keys(_text(params, "ssh_key"))
        except ApiRefusal:
            raise RequestRefusal("SSH_KEY:INVALID", "ssh_key is not an SSH public key") from None
        if len(keys) != 1:
            raise RequestRefusal("SSH_KEY:INVALID", "ssh_key must hold exactly one public key")
        api_version = params.get("api_version")
        record, token = self.store.create(
            contract=contract,
            target=target,
            aim=aim,
            env_vars=list(env_vars),
            ssh_key=keys[0],
            api_version=str(api_version) if api_version is not None else None,
        )
        result: dict[str, Any] = {
            "request_id": record.request_id,
            "token": token,
            "assigned_host_uri": self.assigned_host,
        }
        if aim == "production":
            result["info"] = PRODUCTION_INFO
        return result

    def transfer_start(self, params: dict[str, Any]) -> dict[str, Any]:
        record = self.record_for(params)
        transfer_type = params.get("transfer_type")
        if transfer_type not in TRANSFER_TYPES:
            raise RequestRefusal(
                "TRANSFER_TYPE:INVALID", "transfer_type must be upload or download"
            )
        status = self.store.state(record).status
        wanted = "new" if transfer_type == "upload" else "done"
        if status != wanted:
            raise RequestRefusal(
                "STATE:INVALID",
                f'Cannot start an {transfer_type} for a request in state "{status}" '
                f'(it needs "{wanted}")',
            )
        if transfer_type == "download":
            self.store.write_upgrade_log(record)
        endpoint = self.windows.open(
            record.request_id,
            str(transfer_type),
            self.store.data_dir(record.request_id),
            record.ssh_key,
        )
        result: dict[str, Any] = {
            "ssh_port": endpoint.port,
            "known_hosts": endpoint.known_hosts(self.ssh_hostname),
        }
        if transfer_type == "download":
            result["dump_name"] = DEFAULT_DUMP_NAME
        return result

    def transfer_stop(self, params: dict[str, Any]) -> dict[str, Any]:
        record = self.record_for(params)
        return {"stopped": self.windows.close(record.request_id)}

    def process(self, params: dict[str, Any]) -> dict[str, Any]:
        record = self.record_for(params)
        if record.process_started_at is None:
            if self.store.state(record).status != "new":
                raise RequestRefusal("STATE:INVALID", "This request can no longer be processed")
            if self.store.uploaded_dump(record.request_id) is None:
                raise RequestRefusal(
                    "FILE:MISSING",
                    "No dump was uploaded: expected /data/" + ", /data/".join(DUMP_NAMES),
                )
            self.windows.close(record.request_id)
            record = self.store.start_processing(record)
        return {"is_pg_version_compatible": record.pg_compatible}

    def status(self, params: dict[str, Any]) -> dict[str, Any]:
        record = self.record_for(params)
        state = self.store.state(record)
        result: dict[str, Any] = {
            "status": state.status,
            "host_uri": self.assigned_host,
            "archived": record.archived,
        }
        if state.reason is not None:
            result["reason"] = state.reason
        return result

    def wipe(self, params: dict[str, Any]) -> dict[str, Any]:
        contract = _text(params, "contract")
        record = self.record_for(params)
        if record.contract_sha256 != digest(contract):
            raise RequestRefusal("CONTRACT:MISMATCH", "This token is not one of this contract's")
        wiped: list[int] = []
        failed: list[int] = []
        for other in self.store.records():
            if other.contract_sha256 != record.contract_sha256 or other.archived:
                continue
            self.windows.close(other.request_id)
            (wiped if self.store.wipe(other) else failed).append(other.request_id)
        return {"wiped": wiped, "failed": failed}

    def cancel(self, request_id: int) -> dict[str, Any]:
        """The admin hook: cancel a request unless it is final already."""
        record = self.store.get(request_id)
        if record is None:
            raise web.HTTPNotFound(text=f"no request {request_id}\n")
        if self.store.state(record).status not in FINAL_STATES and record.cancelled_at is None:
            record = self.store.update(request_id, cancelled_at=time.time())
            self.windows.close(request_id)
        return {"request_id": request_id, "status": self.store.state(record).status}


# -- HTTP -----------------------------------------------------------------------------------

REQUEST_API_KEY: web.AppKey[RequestApi] = web.AppKey("request_api", RequestApi)
_FAULTS_KEY: web.AppKey[FaultInjector] = web.AppKey("request_api_faults", FaultInjector)
_CALLS_KEY: web.AppKey[CallLog] = web.AppKey("request_api_calls", CallLog)


def _envelope(call_id: object, **content: Any) -> web.Response:
    return web.json_response({"jsonrpc": "2.0", "id": call_id, **content})


def _jsonrpc_error(call_id: object, fault: JsonRpcFault, code: int = 200) -> web.Response:
    error = {
        "code": code,
        "message": "Odoo Server Error",
        "data": {"name": fault.name, "message": fault.message, "arguments": [fault.message]},
    }
    return _envelope(call_id, error=error)


async def _read_envelope(request: web.Request) -> tuple[object, dict[str, Any]]:
    body = await request.content.read(MAX_BODY_BYTES + 1)
    if len(body) > MAX_BODY_BYTES:
        raise JsonRpcFault("REQUEST:TOO_LARGE", f"request body over {MAX_BODY_BYTES} bytes")
    try:
        envelope = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise JsonRpcFault("JSONRPC:INVALID", "the body is not JSON") from None
    if not isinstance(envelope, dict) or not isinstance(envelope.get("params", {}), dict):
        raise JsonRpcFault("JSONRPC:INVALID", "expected a JSON-RPC object with `params`")
    return envelope.get("id"), envelope.get("params") or {}


def _host(request: web.Request) -> dict[str, str]:
    """The Host a call was sent to, for calls.jsonl (shows the switch to the assigned host)."""
    return {"host": request.host}


def _request_id_of(api: RequestApi, params: dict[str, Any], result: dict[str, Any]) -> int | None:
    if isinstance(result.get("request_id"), int):
        return int(result["request_id"])
    token = params.get("token")
    record = api.store.by_token(token) if isinstance(token, str) and token else None
    return record.request_id if record else None


async def rpc_method(request: web.Request) -> web.StreamResponse:
    """`POST /upgrade/request/<method>`: faults, then the method, then one logged call."""
    api = request.app[REQUEST_API_KEY]
    faults = request.app[_FAULTS_KEY]
    method = request.match_info["method"]
    call_name = f"upgrade/request/{method}"
    if faults.latency > 0:
        await asyncio.sleep(faults.latency)
    if faults.should_fail_call():
        # Answered before acting, so that a retried `create` never makes two requests.
        request.app[_CALLS_KEY].record(
            call_name, None, 503, {"failures": [{"reason": "HTTP:503"}]}, extra=_host(request)
        )
        return web.json_response(
            {"jsonrpc": "2.0", "error": {"code": 503, "message": "Service Unavailable"}},
            status=503,
        )
    handlers = {
        "create": api.create,
        "transfer/start": api.transfer_start,
        "transfer/stop": api.transfer_stop,
        "process": api.process,
        "status": api.status,
        "wipe": api.wipe,
    }
    call_id: object = None
    params: dict[str, Any] = {}
    request_id: int | None = None
    try:
        call_id, params = await _read_envelope(request)
        handler = handlers.get(method)
        if handler is None:
            raise JsonRpcFault("METHOD:NOT_FOUND", f"unknown method {method}")
        result = await asyncio.to_thread(handler, params)
    except RequestRefusal as refusal:
        request_id = _request_id_of(api, params, {})
        request.app[_CALLS_KEY].record(
            call_name,
            request_id,
            200,
            {"failures": [{"reason": refusal.reason}]},
            extra=_host(request),
        )
        return _envelope(call_id, result={"error": refusal.message})
    except JsonRpcFault as fault:
        request.app[_CALLS_KEY].record(
            call_name, None, 200, {"failures": [{"reason": fault.reason}]}
        )
        return _jsonrpc_error(call_id, fault)
    request_id = _request_id_of(api, params, result)
    request.app[_CALLS_KEY].record(
        call_name, request_id, 200, {"failures": []}, extra=_host(request)
    )
    return _envelope(call_id, result=result)


async def logs(request: web.Request) -> web.StreamResponse:
    """`GET /upgrade/request/logs?token=...` with `Range: bytes=N-`: the log from byte N."""
    api = request.app[REQUEST_API_KEY]
    faults = request.app[_FAULTS_KEY]
    calls = request.app[_CALLS_KEY]
    if faults.latency > 0:
        await asyncio.sleep(faults.latency)
    if faults.should_fail_call():
        calls.record(
            "upgrade/request/logs",
            None,
            503,
            {"failures": [{"reason": "HTTP:503"}]},
            extra=_host(request),
        )
        return web.Response(status=503, text="Service Unavailable\n")
    token = request.query.get("token", "")
    record = api.store.by_token(token) if token else None
    if record is None:
        calls.record(
            "upgrade/request/logs",
            None,
            404,
            {"failures": [{"reason": "TOKEN:INVALID"}]},
            extra=_host(request),
        )
        return web.Response(status=404, text="No upgrade request matches this token\n")
    text = api.store.log_text(record).encode()
    size = len(text)
    header = request.headers.get("Range")
    match = _RANGE.match(header.strip()) if header else None
    calls.record(
        "upgrade/request/logs", record.request_id, 200, {"failures": []}, extra=_host(request)
    )
    if match is None:
        return web.Response(body=text, content_type="text/plain", charset="utf-8")
    start = int(match.group(1))
    if start >= size:
        return web.Response(status=416, headers={"Content-Range": f"bytes */{size}"})
    return web.Response(
        status=206,
        body=text[start:],
        content_type="text/plain",
        charset="utf-8",
        headers={"Content-Range": f"bytes {start}-{size - 1}/{size}", "Accept-Ranges": "bytes"},
    )


async def admin_cancel(request: web.Request) -> web.StreamResponse:
    """`POST /emulator/requests/<request_id>/cancel`: the test hook for `cancelled`."""
    raw = request.match_info["request_id"]
    if not raw.isdigit():
        raise web.HTTPBadRequest(text="request_id must be a number\n")
    api = request.app[REQUEST_API_KEY]
    result = await asyncio.to_thread(api.cancel, int(raw))
    request.app[_CALLS_KEY].record("emulator/cancel", int(raw), 200, {"failures": []})
    return web.json_response(result)


def add_request_api(
    app: web.Application, api: RequestApi, faults: FaultInjector, calls: CallLog
) -> None:
    """Serve `/upgrade/request/*` (and the admin cancel hook) from `app`, beside v1."""
    app[REQUEST_API_KEY] = api
    app[_FAULTS_KEY] = faults
    app[_CALLS_KEY] = calls
    app.router.add_get(f"{PREFIX}/logs", logs)
    app.router.add_post(f"{PREFIX}/{{method:(transfer/)?[a-z_]+}}", rpc_method)
    app.router.add_post("/emulator/requests/{request_id}/cancel", admin_cancel)
