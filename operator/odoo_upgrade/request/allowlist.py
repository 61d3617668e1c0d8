"""Which platform URLs an operator may contact (`--allowed-platform-url`).

A namespace user names the platform URL in the spec, and the operator sends the contract
there from its own network position: only URLs its administrator listed are contacted. A URL
matches a listed one when scheme, host and port are the same and its path lies under the
listed path (default ports made explicit, so `https://h` and `https://h:443` are one).
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

_DEFAULT_PORTS = {"https": 443, "http": 80}


class UrlNotAllowed(ValueError):
    """The URL is not under any listed one."""


def _parts(url: str) -> tuple[str, str, int, str]:
    split = urlsplit(url.strip())
    scheme = split.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not split.hostname:
        raise ValueError(f"expected an http(s) URL with a host, got {url!r}")
    if split.query or split.fragment or split.username or split.password:
        raise ValueError(f"expected a URL without credentials, query or fragment, got {url!r}")
    port = split.port or _DEFAULT_PORTS[scheme]
    path = split.path.rstrip("/")
    return scheme, split.hostname.lower(), port, path


def check_allowed_url(url: str) -> str:
    """`url` if it is usable as an allowlist entry; ValueError naming what is wrong."""
    _parts(url)
    return url.rstrip("/")


def url_is_allowed(url: str, allowed: Iterable[str]) -> bool:
    """Whether `url` is one of `allowed` or lies under one of them."""
    try:
        scheme, host, port, path = _parts(url)
    except ValueError:
        return False
    for entry in allowed:
        a_scheme, a_host, a_port, a_path = _parts(entry)
        if (scheme, host, port) != (a_scheme, a_host, a_port):
            continue
        if path == a_path or path.startswith(a_path + "/"):
            return True
    return False


def plain_http_hosts(allowed: Iterable[str]) -> frozenset[str]:
    """`host:port` of every plain-http URL listed: the only hosts spoken to without TLS (a
    local emulator its administrator listed), a request's assigned host included."""
    hosts = set()
    for entry in allowed:
        scheme, host, port, _ = _parts(entry)
        if scheme == "http":
            hosts.add(f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
    return frozenset(hosts)
