"""Secrets never survive redaction: key URLs, key parameters, registered values, PEM keys."""

from __future__ import annotations

import io
import json
import logging

import pytest

from odoo_upgrade.redact import (
    MASK,
    RedactingFilter,
    RedactingFormatter,
    install_log_redaction,
    redact,
    redact_library_loggers,
    register_secret,
)


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


def kopf_handler(log_format: str) -> tuple[logging.Handler, io.StringIO]:
    """A stream handler with the formatter `kopf.configure` installs for `--json-logs` or not."""
    from kopf._core.actions.loggers import LogFormat, make_formatter

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        make_formatter(
            log_format=LogFormat.JSON if log_format == "json" else LogFormat.FULL,
            log_prefix=log_format != "json",
        )
    )
    return handler, stream


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_tracebacks_are_redacted_in_text_and_json_logs(log_format: str) -> None:
    secret = "Contract-Ref-7f3a9c2e41"
    register_secret(secret)
    logger = logging.getLogger(f"test.redact.traceback.{log_format}")
    logger.propagate = False
    handler, stream = kopf_handler(log_format)
    logger.addHandler(handler)
    install_log_redaction(logger)
    try:
        try:
            raise RuntimeError(f"the platform refused contract {secret}")
        except RuntimeError:
            logger.exception("Handler 'flow' failed with an exception. Will retry.")
        logger.error("plain %s line", secret, stack_info=True)
    finally:
        logger.removeHandler(handler)
    output = stream.getvalue()
    assert secret not in output
    # The traceback is still there, redacted: the failure remains diagnosable.
    assert "RuntimeError: the platform refused contract ***" in (
        output if log_format == "text" else json.loads(output.splitlines()[0])["exc_info"]
    )
    if log_format == "json":
        lines = [json.loads(line) for line in output.splitlines()]
        assert lines[1]["message"] == "plain *** line"
        assert "stack_info" in lines[1]


def test_json_extras_are_redacted_too() -> None:
    secret = "Extra-Field-Secret-99"
    register_secret(secret)
    logger = logging.getLogger("test.redact.extras")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    handler, stream = kopf_handler("json")
    logger.addHandler(handler)
    install_log_redaction(logger)
    try:
        logger.info("request created", extra={"detail": f"key is {secret}"})
    finally:
        logger.removeHandler(handler)
    (line,) = stream.getvalue().splitlines()
    assert json.loads(line)["detail"] == "key is ***"


def test_installing_twice_redacts_once() -> None:
    logger = logging.getLogger("test.redact.twice")
    handler, _ = kopf_handler("text")
    logger.addHandler(handler)
    try:
        install_log_redaction(logger)
        install_log_redaction(logger)
        assert len([f for f in handler.filters if isinstance(f, RedactingFilter)]) == 1
        assert isinstance(handler.formatter, RedactingFormatter)
        assert not isinstance(handler.formatter.inner, RedactingFormatter)
    finally:
        logger.removeHandler(handler)
