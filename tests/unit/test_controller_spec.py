"""Parsing the OdooUpgrade spec: defaults as documented, and errors that name the field."""

from __future__ import annotations

from typing import Any

import pytest

from odoo_upgrade.controller.spec import SpecError, parse_duration, parse_spec


def minimal(**overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "target": "18.0",
        "email": "ops@acme.example",
        "contractSecretRef": {"name": "odoo-contract"},
        "source": {"claimName": "odoo-backups", "path": "dumps/acme.dump"},
        "destination": {"claimName": "odoo-backups", "path": "upgraded/acme-18.dump"},
    }
    spec.update(overrides)
    return spec


def test_defaults_fill_what_the_user_left_out() -> None:
    spec = parse_spec(minimal())
    assert spec.aim == "test"
    assert spec.filename == "acme.dump"
    assert spec.contract.key == "contract"
    assert spec.destination_format == "archive"
    assert spec.transport == "auto"
    assert spec.platform_url == "https://upgrade.odoo.com"
    assert spec.poll_interval == 60.0
    assert spec.timezone is None
    assert spec.needs_sftp_access(None)  # auto, size unknown: may pick SFTP


def test_explicit_values_are_kept() -> None:
    spec = parse_spec(
        minimal(
            aim="production",
            filename="prod.dump",
            timezone="Europe/Brussels",
            transport="https",
            platform={"url": "http://127.0.0.1:8069/", "pollInterval": "1m30s"},
            sftp={"hostKey": "ssh-ed25519 AAAAC3", "thresholdBytes": 10},
        )
    )
    assert (spec.aim, spec.filename, spec.timezone) == (
        "production",
        "prod.dump",
        "Europe/Brussels",
    )
    assert spec.platform_url == "http://127.0.0.1:8069"
    assert spec.poll_interval == 90.0
    assert spec.sftp_host_key == "ssh-ed25519 AAAAC3"
    assert spec.sftp_threshold_bytes == 10
    assert not spec.needs_sftp_access(None)


@pytest.mark.parametrize(
    ("text", "seconds"), [("30s", 30), ("2m", 120), ("1m30s", 90), ("1h", 3600), ("1h2m3s", 3723)]
)
def test_go_style_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "0s", "60", "1d", "1.5s", "s", "1s", "4s"])
def test_bad_durations_name_the_field(text: str) -> None:
    with pytest.raises(SpecError, match=r"spec\.platform\.pollInterval"):
        parse_duration(text)


@pytest.mark.parametrize("text", ["1s", "4s"])
def test_poll_interval_is_at_least_the_interval_of_odoos_own_script(text: str) -> None:
    with pytest.raises(SpecError, match=r"spec\.platform\.pollInterval: must be at least 5s"):
        parse_spec(minimal(platform={"pollInterval": text}))
    assert parse_spec(minimal(platform={"pollInterval": "5s"})).poll_interval == 5.0


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"target": None}, "spec.target: is required"),
        ({"target": "18"}, "spec.target"),
        ({"target": "v18.0"}, "spec.target"),
        ({"aim": "fun"}, "spec.aim: expected one of test, production"),
        ({"email": "not-an-email"}, "spec.email"),
        ({"contractSecretRef": {}}, "spec.contractSecretRef.name"),
        (
            {"source": {"claimName": "c", "path": "/etc/passwd"}},
            "spec.source.path: must be a relative",
        ),
        (
            {"source": {"claimName": "c", "path": "a/../../b"}},
            'spec.source.path: must not contain ".."',
        ),
        ({"destination": {"claimName": "c", "path": "/x"}}, "spec.destination.path"),
        ({"destination": {"claimName": "c", "path": ".."}}, "spec.destination.path"),
        ({"source": {"claimName": "c", "path": "."}}, "spec.source.path: must name a file"),
        ({"source": {"claimName": "c", "path": "dumps/"}}, "spec.source.path: must name a file"),
        ({"source": {"claimName": "c", "path": ""}}, "spec.source.path"),
        (
            {"destination": {"claimName": "c", "path": "upgraded/"}},
            "spec.destination.path: must name a file",
        ),
        (
            {"destination": {"claimName": "c", "path": "upgraded/."}},
            "spec.destination.path: must name a file",
        ),
        ({"destination": {"claimName": "c", "path": "./"}}, "spec.destination.path"),
        (
            {"destination": {"claimName": "c", "path": "x", "format": "zip"}},
            "spec.destination.format",
        ),
        ({"transport": "ftp"}, "spec.transport"),
        ({"filename": "a/b"}, "spec.filename"),
        ({"platform": {"url": "ftp://x"}}, "spec.platform.url"),
        ({"sftp": {"thresholdBytes": -1}}, "spec.sftp.thresholdBytes"),
    ],
)
def test_invalid_specs_are_rejected_naming_the_field(overrides: dict[str, Any], field: str) -> None:
    with pytest.raises(SpecError) as raised:
        parse_spec(minimal(**overrides))
    assert str(raised.value).startswith(field)


def test_a_path_with_dots_inside_a_name_is_fine() -> None:
    spec = parse_spec(minimal(source={"claimName": "c", "path": "dumps/acme..v1.dump"}))
    assert spec.source.path == "dumps/acme..v1.dump"


def test_upgrade_request_settings_are_parsed() -> None:
    spec = parse_spec(
        minimal(
            transport="rsync",
            destination={"claimName": "c", "path": "upgraded/acme-18"},
            platform={"api": "upgrade-request", "env": ["ODOO_LOG_LEVEL=debug", "EMPTY="]},
        )
    )
    assert spec.platform_api == "upgrade-request"
    assert spec.platform_env == ("ODOO_LOG_LEVEL=debug", "EMPTY=")
    assert spec.downloads_a_directory and not spec.needs_sftp_access(None)
    auto = parse_spec(minimal(platform={"api": "upgrade-request"}))
    assert auto.transport == "auto" and not auto.needs_sftp_access(None)  # auto means rsync there
    assert parse_spec(minimal()).platform_api == "database-v1"


@pytest.mark.parametrize(
    ("overrides", "field", "words"),
    [
        ({"transport": "rsync"}, "spec.transport", "spec.platform.api 'database-v1'"),
        (
            {"transport": "sftp", "platform": {"api": "upgrade-request"}},
            "spec.transport",
            "expected auto or rsync",
        ),
        ({"platform": {"api": "upgrade-request/v2"}}, "spec.platform.api", "upgrade-request"),
        ({"platform": {"env": ["A=1"]}}, "spec.platform.env", "upgrade-request"),
        (
            {"platform": {"api": "upgrade-request", "env": ["1A=x"]}},
            "spec.platform.env[0]",
            "NAME=VALUE",
        ),
        (
            {"platform": {"api": "upgrade-request", "env": ["A=1", "no-equals"]}},
            "spec.platform.env[1]",
            "NAME=VALUE",
        ),
        (
            {
                "platform": {"api": "upgrade-request"},
                "destination": {"claimName": "c", "path": "x", "format": "sql"},
            },
            "spec.destination.format",
            "spec.platform.api upgrade-request",
        ),
        (
            {"platform": {"api": "upgrade-request"}, "sftp": {"hostKey": "ssh-ed25519 AAAA"}},
            "spec.sftp.hostKey",
            "transfer/start",
        ),
    ],
)
def test_settings_of_one_api_are_refused_with_the_other(
    overrides: dict[str, Any], field: str, words: str
) -> None:
    with pytest.raises(SpecError) as raised:
        parse_spec(minimal(**overrides))
    assert str(raised.value).startswith(field + ":")
    assert words in str(raised.value)
