"""Blocking `http.client` connections with the trust and proxies of the platform client.

Shared by the HTTPS download (`range_get`) and upload (`file_post`), which both run in a
worker thread: httpx's per-piece async work could not keep up with curl on large bodies.
"""

from __future__ import annotations

import base64
import http.client
import ssl
import urllib.request
from typing import Final
from urllib.parse import SplitResult, unquote, urlsplit

import httpx

CONNECT_TIMEOUT: Final = 15.0


def tls_context() -> ssl.SSLContext:
    """A verifying TLS context with the trust of the platform client (httpx): certifi's CAs,
    or SSL_CERT_FILE / SSL_CERT_DIR when set. Built per attempt: it takes milliseconds."""
    return httpx.create_ssl_context()


def proxy_for(target: SplitResult) -> SplitResult | None:
    """The proxy from HTTPS_PROXY / HTTP_PROXY / ALL_PROXY unless NO_PROXY exempts the host
    (httpx, which the rest of the operator uses, honours the same variables)."""
    proxies = urllib.request.getproxies()
    proxy = proxies.get(target.scheme) or proxies.get("all")
    if not proxy or urllib.request.proxy_bypass(target.hostname or ""):
        return None
    return urlsplit(proxy if "://" in proxy else f"http://{proxy}")


def unopened_connection(target: SplitResult) -> tuple[http.client.HTTPConnection, str]:
    """An unopened connection to `target` (through its proxy, if any) and the request target.

    Raises ValueError for a URL that is not http(s) with a host (the text names the scheme
    only: the URL may hold a key).
    """
    if target.scheme not in ("https", "http") or not target.hostname:
        raise ValueError(
            f"expected an https:// (or http://) URL with a host, got scheme {target.scheme!r}"
        )
    path = (target.path or "/") + (f"?{target.query}" if target.query else "")
    default_port = 443 if target.scheme == "https" else 80
    host, port = target.hostname, target.port or default_port
    proxy = proxy_for(target)
    connection: http.client.HTTPConnection
    if proxy is None:
        if target.scheme == "https":
            connection = http.client.HTTPSConnection(
                host, port, timeout=CONNECT_TIMEOUT, context=tls_context()
            )
        else:
            connection = http.client.HTTPConnection(host, port, timeout=CONNECT_TIMEOUT)
        return connection, path
    proxy_headers = {}
    if proxy.username is not None:
        credentials = f"{unquote(proxy.username)}:{unquote(proxy.password or '')}"
        proxy_headers["Proxy-Authorization"] = (
            "Basic " + base64.b64encode(credentials.encode()).decode()
        )
    proxy_host, proxy_port = proxy.hostname or "", proxy.port or 80
    if target.scheme == "http":
        # A plain-HTTP proxy takes the absolute URL as the request target.
        connection = http.client.HTTPConnection(proxy_host, proxy_port, timeout=CONNECT_TIMEOUT)
        return connection, f"http://{target.netloc.rpartition('@')[2]}{path}"
    # https through the proxy: CONNECT tunnel, then TLS verified against the real host.
    connection = http.client.HTTPSConnection(
        proxy_host, proxy_port, timeout=CONNECT_TIMEOUT, context=tls_context()
    )
    connection.set_tunnel(host, port, headers=proxy_headers)
    return connection, path
