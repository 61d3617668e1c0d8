"""How the upgraded dump comes back (`request.transport.download_transport`), the one rule the
operator's download step and `odoo-upgrade run` share."""

from __future__ import annotations

import pytest

from odoo_upgrade.request.transport import Transport, download_transport

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
