"""Generated key pairs and host key checks (pinned and trust on first use)."""

from __future__ import annotations

import io

import paramiko
import pytest

from odoo_upgrade.transfer import (
    HostKeyCheck,
    HostKeyMismatch,
    TransferError,
    fingerprint,
    generate_ssh_keypair,
)
from odoo_upgrade.transfer.ssh_keys import key_line, load_private_key


def test_generated_pair_loads_in_paramiko_and_matches_its_public_line() -> None:
    pair = generate_ssh_keypair()
    assert pair.private_pem.startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    key = paramiko.Ed25519Key.from_private_key(io.StringIO(pair.private_pem))
    assert pair.public_line.startswith(key_line(key) + " ")
    assert load_private_key(pair.private_pem).get_base64() == key.get_base64()


def test_key_pair_repr_hides_the_private_key() -> None:
    pair = generate_ssh_keypair()
    assert "PRIVATE" not in repr(pair)


def test_unreadable_private_key_error_does_not_echo_it() -> None:
    with pytest.raises(TransferError, match="could not be read") as caught:
        load_private_key("-----BEGIN OPENSSH PRIVATE KEY-----\nbm90LWEta2V5\n-----END")
    assert "bm90LWEta2V5" not in str(caught.value)


def server_key() -> paramiko.PKey:
    pair = generate_ssh_keypair()
    return paramiko.Ed25519Key.from_private_key(io.StringIO(pair.private_pem))


def test_pinned_key_accepts_the_same_key_with_or_without_comment() -> None:
    key = server_key()
    check = HostKeyCheck(pinned=key_line(key) + " host-comment")
    assert check.verify("sftp.example", 2200, key) is check


def test_pinned_key_refuses_another_key_naming_host_and_fingerprints() -> None:
    pinned, presented = server_key(), server_key()
    check = HostKeyCheck(pinned=key_line(pinned))
    with pytest.raises(HostKeyMismatch) as caught:
        check.verify("sftp.example", 2200, presented)
    text = str(caught.value)
    assert "sftp.example:2200" in text
    assert fingerprint(key_line(pinned)) in text
    assert fingerprint(key_line(presented)) in text
    assert "PRIVATE" not in text


def test_trust_on_first_use_records_the_key_and_pins_it_for_reconnections() -> None:
    key, other = server_key(), server_key()
    seen: list[str] = []
    after = HostKeyCheck(on_first_use=seen.append).verify("h", 22, key)
    assert seen == [key_line(key)]
    assert after.pinned == key_line(key)
    with pytest.raises(HostKeyMismatch):
        after.verify("h", 22, other)


def test_a_check_needs_a_pin_or_a_recorder() -> None:
    with pytest.raises(ValueError, match="pinned"):
        HostKeyCheck()


def test_malformed_pinned_line_is_refused_with_the_expected_shape() -> None:
    with pytest.raises(ValueError, match="ssh-ed25519 AAAA"):
        HostKeyCheck(pinned="nonsense")


def test_fingerprint_is_openssh_style() -> None:
    line = key_line(server_key())
    kind, value = fingerprint(line).split()
    assert kind == "ssh-ed25519"
    assert value.startswith("SHA256:") and not value.endswith("=")
