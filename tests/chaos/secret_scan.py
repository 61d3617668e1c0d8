"""Look for secrets where a user, an operator or a log shipper would see them.

A secret is one of: a request key, a contract reference, a key-bearing platform URL
(`/database/<region>/<id>/<key>/...`) or an SSH private key. Every hit is reported with its
location and a masked excerpt, so that a failing test never prints the secret it found.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

# A key-bearing URL: region, numeric id, then a key segment. The redacted form `/***` is fine.
KEY_BEARING_URL = re.compile(r"/database/[A-Za-z0-9_-]+/\d+/(?!\*\*\*)[^/\s\"'<>]+")
PRIVATE_KEY_MARKER = "PRIVATE KEY"
MASK = "<masked>"


@dataclass(frozen=True)
class SecretHit:
    """One place where a secret was found: `location` is `<source>:<line>`."""

    location: str
    kind: str
    excerpt: str

    def __str__(self) -> str:
        return f"{self.location}: {self.kind}: {self.excerpt}"


def literal_forms(secret: str) -> set[str]:
    """The ways a literal secret may be spelt in text: as is, URL-encoded, form-encoded."""
    forms = {secret, urllib.parse.quote(secret, safe=""), urllib.parse.quote_plus(secret)}
    return {form for form in forms if form}


def _mask(line: str, secrets: Iterable[str]) -> str:
    masked = KEY_BEARING_URL.sub("/database/<region>/<id>/" + MASK, line)
    for secret in sorted(secrets, key=len, reverse=True):
        masked = masked.replace(secret, MASK)
    masked = masked.strip()
    return masked if len(masked) <= 200 else masked[:200] + "…"


def scan_texts(texts: Mapping[str, str], literals: Mapping[str, str]) -> list[SecretHit]:
    """Every line of every text that holds a secret.

    `texts` maps a location (a file, a command, a URL) to its content; `literals` maps a
    description (`"request key of acme"`) to the literal secret to look for.
    """
    forms = {form: kind for kind, secret in literals.items() for form in literal_forms(secret)}
    hits: list[SecretHit] = []
    for source, text in texts.items():
        for number, line in enumerate(text.splitlines(), start=1):
            kinds = [kind for form, kind in forms.items() if form in line]
            if KEY_BEARING_URL.search(line):
                kinds.append("key-bearing platform URL")
            if PRIVATE_KEY_MARKER in line:
                kinds.append("SSH private key")
            for kind in dict.fromkeys(kinds):
                hits.append(SecretHit(f"{source}:{number}", kind, _mask(line, forms)))
    return hits
