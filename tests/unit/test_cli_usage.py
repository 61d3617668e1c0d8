"""What `odoo-upgrade` says before it talks to any platform: help, version, bad options."""

from __future__ import annotations

import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from odoo_upgrade import __version__
from odoo_upgrade.cli import ByteSize, cli


def test_help_lists_every_command_and_the_exit_codes() -> None:
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    for name in ("run", "create", "upload", "sftp-access", "process", "status", "download",
                 "operator", "mover"):  # fmt: skip
        assert f"\n  {name} " in result.output
    assert "130  interrupted" in result.output


def test_help_does_not_import_kopf_or_paramiko() -> None:
    code = (
        "import sys\n"
        "from odoo_upgrade.cli import main\n"
        "sys.argv = ['odoo-upgrade', '--help']\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('kopf', 'paramiko') if m in sys.modules]\n"
        "print(heavy, file=sys.stderr)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stderr.strip().splitlines()[-1] == "[]"


def test_version_is_the_package_version() -> None:
    result = CliRunner().invoke(cli, ["--version"])
    assert result.output.strip() == f"odoo-upgrade, version {__version__}"


def test_run_requires_dump_and_target() -> None:
    result = CliRunner().invoke(cli, ["run", "--target", "18.0"])
    assert result.exit_code == 2
    assert "--dump" in result.output


@pytest.mark.parametrize(
    ("text", "size"),
    [("512MiB", 512 * 1024**2), ("1GiB", 1024**3), ("100MB", 100 * 1000**2), ("4096", 4096)],
)
def test_sizes_accept_binary_and_decimal_units(text: str, size: int) -> None:
    assert ByteSize().convert(text, None, None) == size


def test_a_size_that_is_not_one_names_what_is_expected() -> None:
    with pytest.raises(click.BadParameter, match=r"expected e\.g\. 512MiB"):
        ByteSize().convert("lots", None, None)
