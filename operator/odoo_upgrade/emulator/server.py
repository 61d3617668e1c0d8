"""Wires the store, the HTTP API and the SFTP server together and runs them until stopped."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket

from aiohttp import web

from odoo_upgrade.emulator.calls import CallLog
from odoo_upgrade.emulator.config import EmulatorConfig
from odoo_upgrade.emulator.faults import FaultInjector
from odoo_upgrade.emulator.host_key import load_or_create_host_key
from odoo_upgrade.emulator.http_api import build_app
from odoo_upgrade.emulator.methods import PlatformApi
from odoo_upgrade.emulator.request_api import RequestApi, add_request_api
from odoo_upgrade.emulator.request_store import UpgradeRequestStore
from odoo_upgrade.emulator.rsync_endpoint import TransferWindows
from odoo_upgrade.emulator.sftp_server import SftpServer
from odoo_upgrade.emulator.store import RequestStore

log = logging.getLogger("odoo_upgrade.emulator")

READY_FILE = "ready.json"


# What a slow link's receiver holds in flight. Without it, loopback's receive buffer (tens of
# MiB) swallows a whole test dump at once and the client's progress jumps to 100 % while the
# emulator is still "receiving" it at --bandwidth.
SLOW_LINK_RECEIVE_BUFFER = 256 * 1024


def slow_link_socket(host: str, port: int) -> socket.socket:
    """A listening socket whose connections buffer no more than a slow link would."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    listening = socket.socket(family, kind, proto)
    listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Set before listen(): accepted connections inherit it, window scaling included.
    listening.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SLOW_LINK_RECEIVE_BUFFER)
    listening.bind(address)
    listening.listen(128)
    listening.setblocking(False)
    return listening


async def serve(config: EmulatorConfig) -> None:
    """Serve HTTP and SFTP until SIGTERM or SIGINT.

    Port 0 binds a free port; the ports actually bound are written to `<data-dir>/ready.json`
    once both servers accept connections.
    """
    config.data_dir.mkdir(parents=True, exist_ok=True)
    ready_file = config.data_dir / READY_FILE
    ready_file.unlink(missing_ok=True)
    store = RequestStore(config.data_dir, config.process_seconds)
    faults = FaultInjector(config)
    host_key = load_or_create_host_key(config.data_dir)
    calls = CallLog(config.data_dir)
    sftp = SftpServer(config.host, config.sftp_port, host_key, store, faults, calls)
    api = PlatformApi(config, store, public_base=config.base_url())
    api.sftp_port = sftp.port
    app = build_app(api, faults, calls)
    windows = TransferWindows(
        bind_host=config.host,
        host_key=host_key,
        faults=faults,
        calls=calls,
        port_range=config.rsync_port_range,
        idle_seconds=config.transfer_idle_seconds,
    )
    request_store = UpgradeRequestStore(
        config.data_dir, config.process_seconds, config.postgres_url
    )
    request_api = RequestApi(config, request_store, windows)
    add_request_api(app, request_api, faults, calls)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site: web.BaseSite
    if config.bandwidth:
        site = web.SockSite(runner, slow_link_socket(config.host, config.port))
    else:
        site = web.TCPSite(runner, config.host, config.port)
    await site.start()
    server = site._server
    sockets = getattr(server, "sockets", None) or []
    http_port = sockets[0].getsockname()[1] if sockets else config.port
    api.public_base = config.base_url(http_port)
    request_api.set_bound_port(http_port)
    sftp.start()
    store.resume_builds()
    request_store.resume_builds()

    info = {
        "pid": os.getpid(),
        "http_port": http_port,
        "sftp_port": sftp.port,
        "url": f"http://{config.host}:{http_port}",
        "assigned_host": request_api.assigned_host,
    }
    partial = ready_file.with_name(f".{READY_FILE}.part")
    partial.write_text(json.dumps(info))
    partial.replace(ready_file)
    log.info(
        "listening: http %s:%s, sftp %s:%s, data dir %s",
        config.host,
        http_port,
        config.host,
        sftp.port,
        config.data_dir,
    )

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        log.info("stopping")
        sftp.stop()
        windows.close_all()
        with contextlib.suppress(Exception):
            await runner.cleanup()
        ready_file.unlink(missing_ok=True)
