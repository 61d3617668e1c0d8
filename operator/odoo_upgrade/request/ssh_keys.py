"""SSH key pairs for a request's transfers (SFTP on v1, rsync over SSH on upgrade/request).

Only `cryptography`: the operator makes key pairs without an SSH library.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey


@dataclass(frozen=True)
class SshKeyPair:
    """`private_pem` is OpenSSH format (a secret); `public_line` is `ssh-ed25519 AAAA… comment`."""

    private_pem: str
    public_line: str

    def __repr__(self) -> str:  # keep the private key out of reprs in logs and tracebacks
        return f"SshKeyPair(public_line={self.public_line!r})"


def generate_ssh_keypair(comment: str = "odoo-upgrade-operator") -> SshKeyPair:
    """A fresh ed25519 key pair for one request's transfers."""
    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    ).decode()
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return SshKeyPair(private_pem=private_pem, public_line=f"{public.decode()} {comment}".strip())
