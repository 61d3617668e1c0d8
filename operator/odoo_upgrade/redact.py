"""Keep secrets out of logs, status, Events and exception text.

Two defences: patterns that catch the platform's key-bearing shapes wherever they occur
(`/database/<region>/<id>/<key>/…` URLs, `key=` parameters), and a registry of literal secrets
(contract references, request keys) known to this process.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import re
import threading
from collections.abc import Iterable, Iterator
from urllib.parse import quote, quote_plus

MASK = "***"

_KEY_URL = re.compile(r"(/database/[A-Za-z0-9_-]+/\d+/)([^/\s\"']+)")
_KEY_PARAM = re.compile(r"(?i)(\b(?:key|contract)=)([^&\s\"']+)")
_PRIVATE_KEY_BLOCK = re.compile(
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----", re.DOTALL
)

_lock = threading.Lock()
# Each secret form, with the owners that registered it (None: kept for the process's life).
_secrets: dict[str, set[str | None]] = {}
# Who registers secrets in this task: the operator sets it per resource (its uid), so that a
# resource's secrets can be forgotten once it is final or deleted.
_owner: contextvars.ContextVar[str | None] = contextvars.ContextVar("secret_owner", default=None)


def register_secret(*values: str | None) -> None:
    """Remember literal secrets (keys, contracts) so that `redact` masks them anywhere."""
    owner = _owner.get()
    with _lock:
        for value in values:
            # Very short values would mask ordinary words; real keys and contracts are long.
            if value and len(value) >= 6:
                # Keys like "Aw7p…Q==" travel percent-encoded in URLs: mask those forms too.
                for form in {value, quote(value, safe=""), quote_plus(value)}:
                    _secrets.setdefault(form, set()).add(owner)


@contextlib.contextmanager
def secrets_owned_by(owner: str) -> Iterator[None]:
    """Secrets registered inside belong to `owner` (e.g. a resource's uid)."""
    token = _owner.set(owner)
    try:
        yield
    finally:
        _owner.reset(token)


def forget_secrets(owner: str) -> None:
    """Drop the secrets only `owner` registered (a contract shared by others stays)."""
    with _lock:
        for form in list(_secrets):
            owners = _secrets[form]
            owners.discard(owner)
            if not owners:
                del _secrets[form]


def known_secrets() -> Iterable[str]:
    with _lock:
        return tuple(_secrets)


def redact(text: str) -> str:
    """Return `text` with key-bearing URLs, key parameters and registered secrets masked."""
    # Literal secrets first: a pattern could otherwise mask part of one (a key containing
    # "Key=") and leave the rest unrecognisable. Longest first, so one containing another
    # is masked whole.
    for secret in sorted(known_secrets(), key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, MASK)
    text = _PRIVATE_KEY_BLOCK.sub(f"-----PRIVATE KEY {MASK}-----", text)
    text = _KEY_URL.sub(rf"\g<1>{MASK}", text)
    return _KEY_PARAM.sub(rf"\g<1>{MASK}", text)


class RedactingFilter(logging.Filter):
    """A logging filter that rewrites every record's message (and exception text) redacted."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info:
            if not record.exc_text:
                record.exc_text = logging.Formatter().formatException(record.exc_info)
            # Formatters that format exc_info again (python-json-logger's, kopf's JSON logs)
            # would print the traceback unredacted: leave them only the redacted text.
            record.exc_info = None
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        record.msg = redact(message)
        record.args = None
        return True


class RedactingFormatter(logging.Formatter):
    """Wraps a handler's formatter and redacts what it produced (JSON fields and extras too)."""

    def __init__(self, inner: logging.Formatter | None = None) -> None:
        super().__init__()
        self.inner = inner or logging.Formatter()

    def format(self, record: logging.LogRecord) -> str:
        return redact(self.inner.format(record))


def install_log_redaction(logger: logging.Logger | None = None) -> None:
    """Redact every record the handlers of `logger` (default: the root logger) emit.

    Each handler gets the redacting filter (message, arguments, traceback) and its formatter is
    wrapped so that whatever it writes passes `redact()` once more. Install it after the
    handlers exist (after `kopf.configure`); kopf's Event poster is the handler of
    `kopf.objects`.
    """
    target = logger or logging.getLogger()
    filt = RedactingFilter()
    for handler in target.handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(filt)
        if not isinstance(handler.formatter, RedactingFormatter):
            handler.setFormatter(RedactingFormatter(handler.formatter))


# Libraries that log request URLs (httpx logs each one at INFO, query string and all).
LIBRARY_LOGGERS = ("httpx", "httpcore.connection", "httpcore.http11", "httpcore.http2")


def redact_library_loggers(names: Iterable[str] = LIBRARY_LOGGERS) -> None:
    """Redact records at their source loggers, whatever handlers the application installs.

    A filter on a logger sees only records logged on that very logger, hence the full names.
    """
    for name in names:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactingFilter) for f in logger.filters):
            logger.addFilter(RedactingFilter())
