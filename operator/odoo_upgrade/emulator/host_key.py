"""The SFTP server's ed25519 host key, generated once into the data dir and reused."""

from __future__ import annotations

import os
from pathlib import Path

import paramiko
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

HOST_KEY_FILE = "ssh_host_ed25519_key"


def load_or_create_host_key(data_dir: Path) -> paramiko.PKey:
    """The key in `<data_dir>/ssh_host_ed25519_key`, created (with its `.pub`) if missing."""
    private_path = data_dir / HOST_KEY_FILE
    public_path = data_dir / f"{HOST_KEY_FILE}.pub"
    if not private_path.exists():
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
        public = key.public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        )
        partial = private_path.with_name(f".{HOST_KEY_FILE}.part")
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as stream:
            stream.write(pem)
        partial.replace(private_path)
        public_path.write_bytes(public + b" odoo-upgrade-emulator\n")
    return paramiko.Ed25519Key(filename=str(private_path))
