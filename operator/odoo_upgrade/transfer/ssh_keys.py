"""SSH key pairs for SFTP uploads and verification of the SFTP server's host key."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import socket
from collections.abc import Callable
from dataclasses import dataclass

import paramiko
from paramiko.ssh_exception import IncompatiblePeer

# Key pairs are made without paramiko (the operator needs them too); re-exported for callers.
from odoo_upgrade.request.ssh_keys import SshKeyPair as SshKeyPair
from odoo_upgrade.request.ssh_keys import generate_ssh_keypair as generate_ssh_keypair
from odoo_upgrade.transfer.errors import HostKeyMismatch, TransferError, TransferUnavailable
from odoo_upgrade.transfer.ssh_timeouts import SshTimeouts, StepDeadline

# paramiko's own bounds sit this much beyond ours, so that ours (which name the step) end it.
BACKSTOP = 5.0
FAST_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "aes128-ctr")


def load_private_key(private_key_pem: str) -> paramiko.PKey:
    """Load an OpenSSH/PEM private key (ed25519, ECDSA or RSA) without echoing it in errors."""
    for key_class in (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey):
        try:
            return key_class.from_private_key(io.StringIO(private_key_pem))
        except (paramiko.SSHException, ValueError, TypeError):
            continue
    raise TransferError(
        "the SFTP private key could not be read: expected an unencrypted OpenSSH ed25519, "
        "ECDSA or RSA private key"
    )


def key_line(key: paramiko.PKey) -> str:
    """`<type> <base64>`, the form stored in the request Secret's `sftp-host-key`."""
    return f"{key.get_name()} {key.get_base64()}"


def _split_line(line: str) -> tuple[str, str]:
    parts = line.split()
    if len(parts) < 2:
        raise ValueError(f"a host key must look like 'ssh-ed25519 AAAA…', got {line[:40]!r}")
    return parts[0], parts[1]


def fingerprint(line: str) -> str:
    """OpenSSH-style fingerprint of a key line: `ssh-ed25519 SHA256:…`."""
    kind, blob = _split_line(line)
    digest = hashlib.sha256(base64.b64decode(blob)).digest()
    return f"{kind} SHA256:{base64.b64encode(digest).decode().rstrip('=')}"


@dataclass(frozen=True)
class HostKeyCheck:
    """How to trust an SFTP server: a pinned key line, or trust on first use.

    `HostKeyCheck(pinned="ssh-ed25519 AAAA…")` refuses any other key.
    `HostKeyCheck(on_first_use=record)` accepts the first key seen, hands its line to `record`
    (the caller stores it, e.g. in the request Secret) and pins it for reconnections.
    """

    pinned: str | None = None
    on_first_use: Callable[[str], None] | None = None

    def __post_init__(self) -> None:
        if self.pinned is None and self.on_first_use is None:
            raise ValueError("HostKeyCheck needs a pinned key line or an on_first_use callback")
        if self.pinned is not None:
            _split_line(self.pinned)

    def verify(self, host: str, port: int, key: paramiko.PKey) -> HostKeyCheck:
        """Accept or refuse the server's `key`; return the check to use when reconnecting."""
        seen = key_line(key)
        if self.pinned is None:
            if self.on_first_use is not None:
                self.on_first_use(seen)
            return HostKeyCheck(pinned=seen)
        if _split_line(self.pinned) != _split_line(seen):
            raise HostKeyMismatch(host, port, fingerprint(self.pinned), fingerprint(seen))
        return self


def start_transport(
    hostname: str,
    port: int,
    *,
    pinned: str | None = None,
    timeouts: SshTimeouts | None = None,
    **options: int,
) -> paramiko.Transport:
    """Connect and run the SSH handshake (no authentication yet), each within
    `timeouts.connect` seconds; later steps on the transport get paramiko backstops.

    With a `pinned` key line, only that key type is asked for; a server without one is
    refused like a mismatching key.
    """
    bounds = timeouts or SshTimeouts()
    key_type = _split_line(pinned)[0] if pinned else None
    try:
        sock = socket.create_connection((hostname, port), timeout=bounds.connect)
    except OSError as exc:
        raise TransferUnavailable(f"SFTP server {hostname}:{port} unreachable ({exc})") from None
    transport = paramiko.Transport(sock, **options)  # type: ignore[arg-type]
    transport.banner_timeout = transport.handshake_timeout = bounds.connect + BACKSTOP
    transport.auth_timeout = bounds.connect + BACKSTOP
    transport.channel_timeout = bounds.connect + BACKSTOP
    security = transport.get_security_options()
    # AES-GCM first: one AEAD pass per packet instead of cipher plus HMAC (faster in paramiko).
    preferred = [c for c in FAST_CIPHERS if c in security.ciphers]
    security.ciphers = (*preferred, *(c for c in security.ciphers if c not in preferred))
    if key_type:
        # Ask for the pinned key's type, so a server with several keys shows the pinned one.
        with contextlib.suppress(ValueError):
            transport.get_security_options().key_types = (key_type,)
    try:
        with StepDeadline(transport, bounds.connect, "SSH handshake", f"{hostname}:{port}"):
            transport.start_client(timeout=bounds.connect + BACKSTOP)
    except TransferUnavailable:
        transport.close()
        raise
    except IncompatiblePeer as exc:
        transport.close()
        if pinned and "host key" in str(exc):
            raise HostKeyMismatch(
                hostname, port, fingerprint(pinned), f"no {key_type} host key offered"
            ) from None
        raise TransferUnavailable(f"SSH handshake with {hostname}:{port} failed ({exc})") from None
    except (paramiko.SSHException, EOFError, OSError) as exc:
        transport.close()
        raise TransferUnavailable(f"SSH handshake with {hostname}:{port} failed ({exc})") from None
    return transport


def fetch_host_key(hostname: str, port: int, timeouts: SshTimeouts | None = None) -> str:
    """The server's host key as `"ssh-ed25519 AAAA…"` (for trust on first use); no login."""
    transport = start_transport(hostname, port, timeouts=timeouts)
    try:
        return key_line(transport.get_remote_server_key())
    finally:
        transport.close()
