"""Pure parts of the rsync transfers and of the emulator's rsync command check."""

from __future__ import annotations

import gzip
import re
import subprocess
from pathlib import Path

import pytest

from odoo_upgrade.emulator.rsync_command import (
    FORCED_OPTIONS,
    RsyncCommandRefused,
    map_remote_path,
    parse_server_command,
)
from odoo_upgrade.transfer.errors import DestinationExists, RemoteRefused, TransferError
from odoo_upgrade.transfer.rsync import (
    RsyncEndpoint,
    RsyncRun,
    SshHostKeyMismatch,
    classify_failure,
    remote_dump_name,
    rename_noreplace,
    sha256sums_text,
    ssh_command,
)

ENDPOINT = RsyncEndpoint("127.0.0.1", 40022, "[127.0.0.1]:40022 ssh-ed25519 AAAAC3NzaC1lZDI1\n")

# -- the emulator's check of `rsync --server` commands ------------------------------------


def test_upload_and_download_commands_of_real_rsync_clients_are_accepted() -> None:
    upload = parse_server_command(
        "rsync --server -tre.iLsfxCIvu --partial-dir .odoo-upgrade-partial --timeout=300 . /data/",
        sender=False,
    )
    assert upload.argv("/usr/bin/rsync") == [
        "/usr/bin/rsync",
        "--server",
        "-tre.iLsfxCIvu",
        "--partial-dir=.odoo-upgrade-partial",
        "--timeout=300",
        *FORCED_OPTIONS,
        ".",
        "./",
    ]
    download = parse_server_command(
        "rsync --server --sender -tre.iLsfxCIvu --ignore-missing-args . "
        "/data/upgraded.dump /data/filestore /data/we\\ ird\\;name",
        sender=True,
    )
    assert download.paths == ("./upgraded.dump", "./filestore", "./we ird;name")


@pytest.mark.parametrize(
    ("command", "why"),
    [
        ("cat /etc/passwd", "only rsync"),
        ("/usr/bin/rsync --server . /data/", "only rsync"),
        ("rsync --daemon", "only `rsync --server`"),
        ("rsync --server . /data/ ; id", "shell operators"),
        ("rsync --server . /data/ | nc x 1", "shell operators"),
        ("rsync --server . /etc/", "outside /data/"),
        ("rsync --server . /data/../etc", "'..'"),
        ("rsync --server . /datax/", "outside /data/"),
        ("rsync --server . /data/*", "wildcards"),
        ("rsync --server -s . /data/", "-s is not allowed"),
        ("rsync --server -L . /data/", "-L is not allowed"),
        ("rsync --server --log-file=/tmp/x . /data/", "--log-file is not allowed"),
        ("rsync --server --partial-dir=/tmp/p . /data/", "is not allowed"),
        ("rsync --server --partial-dir=.. . /data/", "is not allowed"),
        ("rsync --server . /data/a /data/b", "exactly one destination"),
        ("rsync --server --sender . /data/", "accepts only rsync --server (no --sender)"),
        ("rsync --server /data/", "unexpected argument"),
        ("rsync --server -e.iL'", "unparsable"),
    ],
)
def test_anything_else_is_refused_with_the_reason(command: str, why: str) -> None:
    with pytest.raises(RsyncCommandRefused, match=re.escape(why)):
        parse_server_command(command, sender=False)


def test_remote_paths_map_into_the_request_directory() -> None:
    assert map_remote_path("/data") == "."
    assert map_remote_path("/data/") == "./"
    assert map_remote_path("/data/x/./y/") == "./x/y/"
    assert map_remote_path("/data//-rf") == "./-rf"  # never read as an option


# -- the client side --------------------------------------------------------------------------


def test_dump_names_come_from_the_content(tmp_path: Path) -> None:
    directory = tmp_path / "dir"
    directory.mkdir()
    (directory / "toc.dat").write_bytes(b"PGDMP")
    samples = {
        "custom": (b"PGDMP\x01\x0e", "origin.dump"),
        "zip": (b"PK\x03\x04rest", "origin.zip"),
        "gz": (gzip.compress(b"-- sql"), "origin.sql.gz"),
        "sql": (b"-- PostgreSQL database dump\n", "origin.sql"),
    }
    assert remote_dump_name(directory) == "origin.dump"
    for name, (content, expected) in samples.items():
        (tmp_path / name).write_bytes(content)
        assert remote_dump_name(tmp_path / name) == expected
    (tmp_path / "bin").write_bytes(b"\x00\x01\x02")
    with pytest.raises(TransferError, match="cannot tell the format"):
        remote_dump_name(tmp_path / "bin")
    (tmp_path / "empty-dir").mkdir()
    with pytest.raises(TransferError, match=r"without toc\.dat"):
        remote_dump_name(tmp_path / "empty-dir")


def test_ssh_command_is_strict_and_carries_no_key_material(tmp_path: Path) -> None:
    command = ssh_command(ENDPOINT, tmp_path / "id_request", tmp_path / "known_hosts")
    for option in (
        "-F none",
        "-p 40022",
        f"-i {tmp_path}/id_request",
        "StrictHostKeyChecking=yes",
        f"UserKnownHostsFile={tmp_path}/known_hosts",
        "GlobalKnownHostsFile=/dev/null",
        "IdentitiesOnly=yes",
        "IdentityAgent=none",
        "BatchMode=yes",
    ):
        assert option in command
    assert "PRIVATE" not in command
    with pytest.raises(TransferError, match="unsafe characters"):
        ssh_command(ENDPOINT, tmp_path / "a b", tmp_path / "known_hosts")


def test_sha256sums_text_is_what_sha256sum_checks(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "one").write_bytes(b"1")
    (tmp_path / "two words").write_bytes(b"2")
    (tmp_path / "back\\slash").write_bytes(b"3")
    text = sha256sums_text(tmp_path)
    (tmp_path / "SHA256SUMS").write_text(text)
    assert sha256sums_text(tmp_path) == text  # SHA256SUMS does not list itself
    check = subprocess.run(
        ["sha256sum", "--strict", "-c", "SHA256SUMS"], cwd=tmp_path, capture_output=True
    )
    assert check.returncode == 0, check.stdout
    assert len(text.splitlines()) == 3


def test_failures_map_onto_transfer_errors() -> None:
    def run(code: int, stderr: str) -> TransferError:
        return classify_failure(RsyncRun(code, stderr, 0), ENDPOINT, "upload")

    mismatch = run(
        255, "No ED25519 host key is known for [127.0.0.1]:40022\nHost key verification failed."
    )
    assert isinstance(mismatch, SshHostKeyMismatch) and not mismatch.transient
    refused = run(255, "odoo@127.0.0.1: Permission denied (publickey).")
    assert isinstance(refused, RemoteRefused) and not refused.transient
    assert run(12, "rsync: connection unexpectedly closed").transient
    assert run(30, "timeout in data send/receive").transient
    assert run(255, "ssh: connect to host 127.0.0.1 port 40022: Connection refused").transient
    missing = run(23, 'rsync: [sender] link_stat "/data/x" failed: No such file or directory (2)')
    assert isinstance(missing, RemoteRefused)
    assert not run(2, "protocol incompatibility").transient


def test_rename_noreplace_never_replaces_even_an_empty_directory(tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.mkdir()
    (source / "file").write_text("x")
    taken = tmp_path / "taken"
    taken.mkdir()
    with pytest.raises(DestinationExists):
        rename_noreplace(source, taken)
    assert (source / "file").exists() and list(taken.iterdir()) == []
    rename_noreplace(source, tmp_path / "free")
    assert (tmp_path / "free" / "file").read_text() == "x"
