"""The emulator's reading of pg_dump SQL and the upgrade it appends."""

from __future__ import annotations

from odoo_upgrade.emulator.dumps import read_pgdmp_header
from odoo_upgrade.emulator.sql_scan import OdooSqlScanner
from odoo_upgrade.emulator.upgrade import NewAttachment, upgrade_sql
from tests.support.emulator import sample_dump_bytes

SQL = (
    b"SET client_encoding = 'UTF8';\n"
    b"COPY public.ir_attachment (id, name, type, store_fname) FROM stdin;\n"
    b"1\tdoc\tbinary\tab/abc\n\\.\n"
    b"COPY public.ir_module_module (id, name, state, latest_version) FROM stdin;\n"
    b"1\tbase\tinstalled\t16.0.1.3\n2\tcrm\tuninstalled\t\\N\n3\tweb\tinstalled\t16.0.1.0\n\\.\n"
    b"COPY public.res_partner (id, name) FROM stdin;\n1\tCOPY\n\\.\n"
)


def scan(data: bytes, chunk: int) -> OdooSqlScanner:
    scanner = OdooSqlScanner()
    for start in range(0, len(data), chunk):
        scanner.feed(data[start : start + chunk])
    scanner.finish()
    return scanner


def test_columns_and_base_row_are_read_whatever_the_chunking() -> None:
    for chunk in (1, 7, 64, len(SQL)):
        scanner = scan(SQL, chunk)
        assert scanner.is_odoo and scanner.modules_read
        assert scanner.base_version == "16.0.1.3"
        assert scanner.columns["ir_attachment"] == ["id", "name", "type", "store_fname"]
        assert [m["name"] for m in scanner.modules] == ["base", "crm", "web"]
        assert scanner.modules[1]["latest_version"] is None


def test_sql_without_odoo_tables_is_not_odoo() -> None:
    scanner = scan(sample_dump_bytes("sql", size=4096), 1000)
    assert not scanner.is_odoo and scanner.base_version is None


def test_the_upgrade_fits_the_dump_columns() -> None:
    attachment = NewAttachment.report("18.0", "0" * 64)
    sql = upgrade_sql("18.0", ["id", "name", "latest_version"], ["id", "name", "type"], attachment)
    text = sql.decode()
    assert "state IN" not in text  # no state column: base only
    assert "INSERT INTO public.ir_attachment (name, type) VALUES" in text
    assert attachment.store_fname == f"{attachment.checksum[:2]}/{attachment.checksum}"
    without = upgrade_sql("18.0", ["name", "state", "latest_version"], None, attachment).decode()
    assert "state IN ('installed'" in without and "INSERT" not in without


def test_synthetic_samples_hold_no_database() -> None:
    header = read_pgdmp_header(sample_dump_bytes("pgdmp", size=4096, pg_version="14.5"))
    assert header.server_version == "14.5"
    assert header.toc_entries is not None and header.toc_entries <= 0
