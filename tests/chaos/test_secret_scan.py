"""The secret scanner finds each shape of secret, and never prints the secret it found.

Without these the hygiene test could pass because the scanner is blind.
"""

from __future__ import annotations

from tests.chaos.secret_scan import scan_texts

KEY = "Aw7pItGVKFuZ_FOR3U8VFQ=="
CONTRACT = "M123456-abcdef"


def test_finds_a_request_key_raw_and_url_encoded() -> None:
    hits = scan_texts(
        {"log": f"ok\nkey is {KEY}\nGET /status?key=Aw7pItGVKFuZ_FOR3U8VFQ%3D%3D\n"},
        {"request key": KEY},
    )
    assert [h.location for h in hits] == ["log:2", "log:3"]
    assert all(KEY not in str(h) and "Aw7pItGVKFuZ_FOR3U8VFQ%3D" not in str(h) for h in hits)


def test_finds_key_bearing_urls_but_not_redacted_ones() -> None:
    hits = scan_texts(
        {
            "events": "url https://up.example/database/eu1/10534/SeCrEt/upgraded/archive\n"
            "masked https://up.example/database/eu1/10534/***/upgraded/archive\n"
        },
        {},
    )
    assert [(h.location, h.kind) for h in hits] == [("events:1", "key-bearing platform URL")]
    assert "SeCrEt" not in str(hits[0])


def test_finds_private_keys_and_contracts() -> None:
    hits = scan_texts(
        {"pod": "-----BEGIN OPENSSH PRIVATE KEY-----\n", "status": f"contract {CONTRACT}\n"},
        {"contract": CONTRACT},
    )
    assert sorted((h.location, h.kind) for h in hits) == [
        ("pod:1", "SSH private key"),
        ("status:1", "contract"),
    ]


def test_clean_text_has_no_hits() -> None:
    assert scan_texts({"log": "request 10534 done, 12 MiB\n"}, {"request key": KEY}) == []


def test_finds_an_upgrade_request_token_raw_and_in_the_logs_url() -> None:
    token = "q3J2v9Zt_Xo-8kPbW1nR5sT7uY0aC4dE6fG8hI0jK2"  # the shape the platform hands out
    hits = scan_texts(
        {"log": f"GET /upgrade/request/logs?token={token} 206\ntoken {token}\nok\n"},
        {"request token": token},
    )
    assert [h.location for h in hits] == ["log:1", "log:2"]
    assert all(token not in str(h) for h in hits)
