"""Secrets never survive redaction: key URLs, key parameters, registered values, PEM keys."""

from __future__ import annotations

import logging

import pytest

from odoo_upgrade.redact import MASK, redact, redact_library_loggers, register_secret


def test_key_bearing_platform_urls_are_masked() -> None:
    url = "https://upgrade.odoo.com/database/eu1/10534/Aw7pItGVKFuZ_FOR3U8VFQ==/upgraded/archive"
    assert redact(url) == f"https://upgrade.odoo.com/database/eu1/10534/{MASK}/upgraded/archive"


def test_key_and_contract_parameters_are_masked() -> None:
    text = "POST /database/v1/upload?request=7&key=abc%3D%3D and contract=M123456-abcdef"
    out = redact(text)
    assert "abc%3D%3D" not in out and "M123456-abcdef" not in out
    assert "request=7" in out


def test_registered_secret_is_masked_also_percent_encoded() -> None:
    secret = "Registered+Secret/Key=="
    register_secret(secret)
    text = (
        f"raw {secret} quoted Registered%2BSecret%2FKey%3D%3D plus Registered%2BSecret%2FKey%3D%3D"
    )
    out = redact(text)
    assert "Registered" not in out


def test_short_values_are_not_registered_as_secrets() -> None:
    register_secret("abc")
    assert redact("abcdef abc") == "abcdef abc"


def test_private_key_blocks_are_masked() -> None:
    pem = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXk=\n-----END OPENSSH PRIVATE KEY-----"
    assert "b3BlbnNzaC1rZXk" not in redact(f"key: {pem}")


def test_httpx_request_log_lines_are_redacted_at_the_source(
    caplog: pytest.LogCaptureFixture,
) -> None:
    redact_library_loggers()
    with caplog.at_level(logging.INFO, logger="httpx"):
        logging.getLogger("httpx").info(
            'HTTP Request: %s %s "%s"', "POST", "http://h/database/v1/upload?key=SeCrEt123", 200
        )
    assert "SeCrEt123" not in caplog.text
    assert "key=***" in caplog.text
