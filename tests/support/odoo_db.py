"""An Odoo-like database on a real server, and ways to compare databases and filestores.

`create_odoo_database` makes what dump, restore and the emulator care about in an Odoo
database: `ir_module_module` (base and a few modules installed at one series, some not
installed), `res_partner` rows, `ir_attachment` rows whose `store_fname` names files of a
filestore directory laid out as Odoo does (`ab/abcdef…`, the sha1 of the content), and
`ir_config_parameter`. Owned by the app role, as an Odoo database is owned by Odoo's role.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import subprocess
import zipfile
from dataclasses import dataclass
from pathlib import Path

from tests.harness.postgres import PostgresServer

INSTALLED_MODULES = ("base", "web", "mail", "contacts", "sale", "account")
UNINSTALLED_MODULES = ("crm", "website")
SCHEMA = """
CREATE TABLE ir_module_module (
    id serial PRIMARY KEY,
    name varchar NOT NULL UNIQUE,
    state varchar(16),
    latest_version varchar,
    author varchar,
    write_date timestamp DEFAULT now()
);
CREATE TABLE res_partner (
    id serial PRIMARY KEY,
    name varchar NOT NULL,
    email varchar,
    is_company boolean DEFAULT false,
    comment text,
    create_date timestamp DEFAULT now()
);
CREATE INDEX res_partner_name_index ON res_partner (name);
CREATE TABLE ir_attachment (
    id serial PRIMARY KEY,
    name varchar NOT NULL,
    type varchar NOT NULL DEFAULT 'binary',
    res_model varchar,
    res_id integer,
    store_fname varchar,
    checksum varchar(40),
    file_size integer,
    mimetype varchar,
    create_date timestamp DEFAULT now()
);
CREATE INDEX ir_attachment_res_idx ON ir_attachment (res_model, res_id);
CREATE TABLE ir_config_parameter (
    id serial PRIMARY KEY,
    key varchar NOT NULL UNIQUE,
    value text NOT NULL
);
"""


@dataclass(frozen=True)
class OdooDatabase:
    name: str
    filestore: Path
    series: str
    partners: int
    attachments: int


def _module_version(name: str, series: str) -> str:
    return f"{series}.1.3" if name == "base" else f"{series}.1.0"


def attachment_content(database: str, index: int) -> bytes:
    """Deterministic, varied file contents (a few hundred bytes to a few KiB)."""
    line = f"attachment {index} of {database}: " + "lorem ipsum dolor sit amet " * (index % 17)
    return (line + "\n").encode() * (1 + index % 5)


def store_fname(content: bytes) -> tuple[str, str]:
    """Odoo's (store_fname, checksum): `ab/abcdef…` from the content's sha1."""
    sha1 = hashlib.sha1(content).hexdigest()  # noqa: S324 (what Odoo names files by)
    return f"{sha1[:2]}/{sha1}", sha1


def create_odoo_database(
    server: PostgresServer,
    name: str,
    filestore: Path,
    *,
    series: str = "16.0",
    partners: int = 3000,
    attachments: int = 300,
) -> OdooDatabase:
    """Create database `name` (owner: the app role) with its filestore at `filestore`."""
    server.psql(f'CREATE DATABASE "{name}" OWNER "{server.app_user}" TEMPLATE template0')
    modules = [(m, "installed", _module_version(m, series)) for m in INSTALLED_MODULES]
    modules += [(m, "uninstalled", "") for m in UNINSTALLED_MODULES]
    module_rows = "".join(
        f"{m}\t{state}\t{version or chr(92) + 'N'}\tOdoo S.A.\n" for m, state, version in modules
    )
    filestore.mkdir(parents=True, exist_ok=True)
    attachment_rows = []
    for index in range(1, attachments + 1):
        content = attachment_content(name, index)
        fname, checksum = store_fname(content)
        path = filestore / fname
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(content)
        attachment_rows.append(
            f"doc_{index}.txt\tbinary\tres.partner\t{1 + index % max(partners, 1)}\t{fname}\t"
            f"{checksum}\t{len(content)}\ttext/plain\n"
        )
    partner_rows = (
        "SELECT 'Partner ' || g, 'partner' || g || '@example.com', g % 10 = 0, "  # noqa: S608
        f"repeat('note ', g % 20) FROM generate_series(1, {partners:d}) g"
    )
    parameters = f"('database.uuid', md5('{name}')), ('web.base.url', 'http://localhost:8069')"
    script = "".join(
        [
            SCHEMA,
            "COPY ir_module_module (name, state, latest_version, author) FROM stdin;\n",
            module_rows,
            "\\.\n",
            "COPY ir_attachment (name, type, res_model, res_id, store_fname, checksum, "
            "file_size, mimetype) FROM stdin;\n",
            *attachment_rows,
            "\\.\n",
            f"INSERT INTO res_partner (name, email, is_company, comment) {partner_rows};\n",
            f"INSERT INTO ir_config_parameter (key, value) VALUES {parameters};\n",  # noqa: S608
        ]
    )
    server.psql("", name, superuser=False, input_data=script.encode())
    return OdooDatabase(name, filestore, series, partners, attachments)


def table_row_counts(server: PostgresServer, database: str) -> dict[str, int]:
    """Every table of schema public and its exact row count."""
    tables = [
        r[0]
        for r in server.rows(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1", database
        )
    ]
    if not tables:
        return {}
    union = " UNION ALL ".join(
        f"SELECT '{t}', count(*) FROM public.\"{t}\""  # noqa: S608 (test tables)
        for t in tables
    )
    return {r[0]: int(r[1]) for r in server.rows(union, database)}


def module_versions(server: PostgresServer, database: str) -> dict[str, tuple[str, str]]:
    """name -> (state, latest_version or '') of ir_module_module."""
    rows = server.rows(
        "SELECT name, state, coalesce(latest_version, '') FROM ir_module_module", database
    )
    return {r[0]: (r[1], r[2]) for r in rows}


def attachment_files(server: PostgresServer, database: str) -> list[str]:
    """The `store_fname` of every ir_attachment row that has one."""
    return [
        r[0]
        for r in server.rows(
            "SELECT store_fname FROM ir_attachment WHERE store_fname IS NOT NULL ORDER BY 1",
            database,
        )
    ]


def filestore_checksums(root: Path) -> dict[str, str]:
    """relative path -> sha256 of every file under `root` (plus modes, so chmod shows too)."""
    sums: dict[str, str] = {}
    for directory, _, filenames in os.walk(root):
        for name in filenames:
            path = Path(directory) / name
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            sums[str(path.relative_to(root))] = f"{digest}:{path.stat().st_mode:o}"
    return sums


def pg_dump_file(
    server: PostgresServer, database: str, destination: Path, fmt: str = "custom"
) -> Path:
    """Dump with the real pg_dump by hand: `custom`, `directory`, `plain`, `gzip` (plain,
    gzipped) or `zip` (an Odoo backup: dump.sql + filestore/ + manifest.json; pass the
    filestore with `odoo_zip_backup`)."""
    pg_dump = str(Path(server.bin_dir) / "pg_dump")
    env = server.client_env(database=database)
    if fmt in ("custom", "directory"):
        subprocess.run(
            [pg_dump, f"--format={fmt}", "--no-owner", "-f", str(destination)], env=env, check=True
        )
        return destination
    plain = subprocess.run(
        [pg_dump, "--format=plain", "--no-owner"], env=env, check=True, capture_output=True
    ).stdout
    if fmt == "plain":
        destination.write_bytes(plain)
    elif fmt == "gzip":
        destination.write_bytes(gzip.compress(plain, mtime=0))
    else:
        raise ValueError(f"unknown format {fmt!r}")
    return destination


def odoo_zip_backup(
    server: PostgresServer, database: OdooDatabase, destination: Path
) -> Path:  # fmt: skip
    """An Odoo backup zip, as the database manager makes one."""
    plain = subprocess.run(
        [str(Path(server.bin_dir) / "pg_dump"), "--format=plain", "--no-owner"],
        env=server.client_env(database=database.name),
        check=True,
        capture_output=True,
    ).stdout
    modules = {m: _module_version(m, database.series) for m in INSTALLED_MODULES}
    manifest = {
        "odoo_dump": "1",
        "db_name": database.name,
        "version": database.series,
        "major_version": database.series,
        "pg_version": "15.0",
        "modules": modules,
    }
    with zipfile.ZipFile(destination, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("dump.sql", plain)
        archive.writestr("manifest.json", json.dumps(manifest, indent=4))
        for directory, _, filenames in os.walk(database.filestore):
            for name in filenames:
                path = Path(directory) / name
                archive.write(path, "filestore/" + str(path.relative_to(database.filestore)))
    return destination


def zip_members(path: Path) -> list[str]:
    with zipfile.ZipFile(path) as archive:
        return archive.namelist()


def read_zip_member(path: Path, name: str) -> bytes:
    with zipfile.ZipFile(path) as archive:
        return archive.read(name)


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()
