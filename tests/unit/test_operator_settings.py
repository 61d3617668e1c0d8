"""`odoo-upgrade operator` flags: defaults as documented, bad values refused naming the flag
before anything starts, and the platform URL allowlist matching scheme, host and port exactly and
the path as a prefix of whole segments."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from odoo_upgrade.controller import settings
from odoo_upgrade.controller.entry import operator_command
from odoo_upgrade.controller.settings import (
    MoverResources,
    OperatorSettings,
    SettingError,
    allowed_urls,
    parse_quantity,
)
from odoo_upgrade.request.allowlist import url_is_allowed


def test_defaults_allow_only_the_odoo_platform_and_keep_the_mover_resources() -> None:
    defaults = OperatorSettings()
    assert defaults.allowed_platform_urls == ("https://upgrade.odoo.com",)
    assert defaults.max_mover_retries == 10
    assert defaults.mover_active_deadline_seconds == 6 * 3600
    assert defaults.mover_resources.to_json() == {
        "requests": {"cpu": "50m", "memory": "64Mi"},
        "limits": {"cpu": "1", "memory": "256Mi"},
    }
    assert defaults.database_image is None


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://upgrade.odoo.com", True),
        ("https://upgrade.odoo.com/", True),
        ("https://UPGRADE.odoo.com:443", True),
        ("https://upgrade.odoo.com/database/v1", True),
        ("http://upgrade.odoo.com", False),  # scheme
        ("https://upgrade.odoo.com:8443", False),  # port
        ("https://upgrade.odoo.com.evil.example", False),  # host
        ("https://evil.example/https://upgrade.odoo.com", False),
        ("https://user@upgrade.odoo.com", False),  # credentials make it another URL
        ("not a url", False),
    ],
)
def test_default_allowlist_matches_scheme_host_and_port_exactly(url: str, allowed: bool) -> None:
    assert url_is_allowed(url, OperatorSettings().allowed_platform_urls) is allowed


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("http://127.0.0.1:8069/odoo", True),
        ("http://127.0.0.1:8069/odoo/", True),
        ("http://127.0.0.1:8069/odoo/database/v1", True),
        ("http://127.0.0.1:8069/odoo-other", False),  # a path prefix is whole segments
        ("http://127.0.0.1:8069/", False),
        ("http://127.0.0.1:8070/odoo", False),
    ],
)
def test_an_allowed_path_is_a_prefix_of_whole_segments(url: str, allowed: bool) -> None:
    assert url_is_allowed(url, allowed_urls(["http://127.0.0.1:8069/odoo/"])) is allowed


@pytest.mark.parametrize(
    "url",
    ["ftp://upgrade.odoo.com", "https://", "upgrade.odoo.com", "https://h/?x=1",
     "https://h/#frag", "https://user:pw@h"],
)  # fmt: skip
def test_malformed_platform_urls_are_refused_naming_the_flag(url: str) -> None:
    with pytest.raises(SettingError, match=r"^--allowed-platform-url: "):
        allowed_urls([url])
    with pytest.raises(SettingError, match=r"^--allowed-platform-url: "):
        OperatorSettings(allowed_platform_urls=(url,))


def test_duplicate_urls_collapse_and_an_empty_allowlist_is_refused() -> None:
    assert allowed_urls(["https://h", "https://h/"]) == ("https://h",)
    with pytest.raises(SettingError, match="--allowed-platform-url"):
        OperatorSettings(allowed_platform_urls=())


@pytest.mark.parametrize(
    ("text", "value"),
    [("50m", "0.05"), ("1", "1"), ("1.5", "1.5"), ("64Mi", str(64 * 2**20)), ("1G", "1e9"),
     ("1e3", "1000"), ("2E", "2e18")],
)  # fmt: skip
def test_kubernetes_quantities_are_understood(text: str, value: str) -> None:
    from decimal import Decimal

    assert parse_quantity(text, "--x") == Decimal(value)


@pytest.mark.parametrize("text", ["", "12X", "1.2.3", "Mi", "-1", "0", "1 Gi"])
def test_bad_quantities_are_refused_naming_the_flag(text: str) -> None:
    with pytest.raises(SettingError, match=r"^--mover-memory-limit: "):
        parse_quantity(text, "--mover-memory-limit")


def test_a_request_above_its_limit_is_refused() -> None:
    with pytest.raises(SettingError, match=r"^--mover-memory-request: must not exceed"):
        MoverResources(memory_request="1Gi", memory_limit="512Mi")
    assert MoverResources(cpu_request="1", cpu_limit="1000m").cpu_limit == "1000m"


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--allowed-platform-url", "ftp://x"], "--allowed-platform-url"),
        (["--max-mover-retries", "-1"], "--max-mover-retries"),
        (["--mover-active-deadline-seconds", "0"], "--mover-active-deadline-seconds"),
        (["--mover-cpu-limit", "lots"], "--mover-cpu-limit"),
        (["--mover-cpu-request", "2", "--mover-cpu-limit", "1"], "--mover-cpu-request"),
        (["--database-image", " "], "--database-image"),
        (["--leader-elect", "--peering"], "--peering"),
    ],
)
def test_operator_refuses_bad_flags_before_starting(args: list[str], named: str) -> None:
    result = CliRunner().invoke(operator_command, ["--all-namespaces", *args])
    assert result.exit_code == 2, result.output
    assert named in result.output


def test_leader_election_outside_a_pod_needs_a_namespace(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("POD_NAMESPACE", raising=False)
    result = CliRunner().invoke(operator_command, ["--all-namespaces", "--leader-elect"])
    assert result.exit_code == 2
    assert "--leader-election-namespace" in result.output


def test_configure_replaces_the_current_settings() -> None:
    before = settings.current()
    try:
        settings.configure(OperatorSettings(max_mover_retries=3))
        assert settings.current().max_mover_retries == 3
    finally:
        settings.configure(before)
