"""How the upgraded dump comes back (`request.transport.download_transport`), the one rule the
operator's download step and `odoo-upgrade run` share."""

from __future__ import annotations

import pytest

from odoo_upgrade.request.transport import Transport, download_transport, may_use_sftp

V1, UR = "database-v1", "upgrade-request"


@pytest.mark.parametrize(
    ("requested", "fmt", "uploaded_over", "api", "expected"),
    [
        ("sftp", "archive", "sftp", V1, Transport.SFTP),
        ("auto", "archive", "sftp", V1, Transport.SFTP),  # the dump was above the threshold
        ("auto", "archive", "https", V1, Transport.HTTPS),  # it was below
        ("auto", "archive", None, V1, Transport.HTTPS),  # nothing known of the upload
        ("https", "archive", "https", V1, Transport.HTTPS),
        ("sftp", "sql", "sftp", V1, Transport.HTTPS),  # SFTP serves the archive only
        ("auto", "sql", "sftp", V1, Transport.HTTPS),
        ("auto", "archive", "rsync", UR, Transport.RSYNC),
        ("rsync", "archive", "rsync", UR, Transport.RSYNC),
    ],
)
def test_the_dump_comes_back_the_way_it_went_where_the_platform_offers_it(
    requested: str, fmt: str, uploaded_over: str | None, api: str, expected: Transport
) -> None:
    assert download_transport(requested, fmt, uploaded_over, api=api) is expected


@pytest.mark.parametrize(
    ("requested", "api", "size", "granted"),
    [
        ("sftp", V1, None, True),
        ("sftp", V1, 10, True),  # asked for: whatever the size
        ("auto", V1, None, True),  # a file the operator did not make: the mover decides
        ("auto", V1, 1024, False),  # at the threshold auto sends it over HTTPS
        ("auto", V1, 1025, True),
        ("https", V1, None, False),
        ("auto", UR, None, False),  # rsync over SSH, no SFTP grant there
    ],
)
def test_sftp_access_is_asked_for_before_the_upload_only_where_sftp_may_carry_it(
    requested: str, api: str, size: int | None, granted: bool
) -> None:
    assert may_use_sftp(requested, api, size=size, threshold=1024) is granted
