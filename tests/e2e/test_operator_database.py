"""From a live PostgreSQL database to a restored, verified, upgraded database through one
`OdooUpgrade` (`spec.source.database` + `spec.restore`), on the real control plane, the real
operator process, the pod runner's mover pods (the machine's PostgreSQL client tools) and the
cluster's real PostgreSQL server (tests/harness/postgres.py).
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.harness.local_cluster import LocalCluster
from tests.harness.ports import free_port
from tests.harness.postgres import PostgresServer
from tests.support.emulator import RunningEmulator
from tests.support.odoo_db import (
    OdooDatabase,
    attachment_files,
    create_odoo_database,
    filestore_checksums,
    module_versions,
    table_row_counts,
)
from tests.support.operator import RunningOperator
from tests.support.scenario import (
    PHASE_ORDER,
    Namespace,
    Upgrade,
    condition,
    describe,
    events_text,
    phase_of,
    upgrade_manifest,
)

pytestmark = pytest.mark.e2e
pytest_plugins = ["tests.support.operator_fixtures"]

PG_SECRET = "acme-pg-app"  # CloudNativePG names it <cluster>-app
SOURCE_PATH = "dumps/acme.dump"
DESTINATION_PATH = "upgraded/acme-18.dump"
DOWNTIME_SECONDS = 3
FLOW = ("Pending", "Dumping", *PHASE_ORDER[1:-1], "Restoring", "Succeeded")


def cnpg_secret(namespace: str, server: PostgresServer, **overrides: str | None) -> dict[str, Any]:
    """A Secret shaped like CloudNativePG's `<cluster>-app` (keys it writes; None drops one)."""
    data: dict[str, str | None] = {
        **server.secret_data(),
        "user": server.app_user,
        "uri": f"postgresql://{server.app_user}@{server.host}:{server.port}/postgres",
    }
    data.update(overrides)
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": PG_SECRET, "namespace": namespace},
        "type": "kubernetes.io/basic-auth",
        "stringData": {k: v for k, v in data.items() if v is not None},
    }


def database_upgrade(
    ns: Namespace,
    name: str,
    emulator: RunningEmulator,
    source: str,
    target: str,
    *,
    secret: str = PG_SECRET,
    filestore_source: str | None = None,
) -> Upgrade:
    manifest = upgrade_manifest(
        ns.name,
        name,
        platform_url=emulator.url,
        source_path=SOURCE_PATH,
        destination_path=DESTINATION_PATH,
    )
    spec = manifest["spec"]
    spec["source"]["database"] = {"name": source, "connectionSecretRef": {"name": secret}}
    spec["restore"] = {
        "database": {"name": target, "connectionSecretRef": {"name": secret}},
        "filestore": {
            "claimName": "odoo-data",
            "sourcePath": filestore_source or f"filestore/{source}",
            "path": f"filestore/{target}",
        },
    }
    ns.kube.apply(manifest)
    return Upgrade(ns.kube, ns.name, name, ns.diagnostics)


@pytest.fixture
def odoo(
    postgres: PostgresServer, namespaces: Callable[[], Namespace]
) -> Iterator[tuple[Namespace, OdooDatabase]]:
    """A namespace with the contract, both PVCs, the connection Secret, and an Odoo-like
    database whose filestore lies on the `odoo-data` PVC."""
    ns = namespaces()
    ns.prepare()
    data = ns.add_pvc("odoo-data")
    ns.kube.apply(cnpg_secret(ns.name, postgres))
    name = ns.name.replace("-", "_")
    database = create_odoo_database(postgres, name, data / "filestore" / name)
    yield ns, database
    for other in postgres.databases():
        if other.startswith(name):
            postgres.drop_database(other)


class HeldSession:
    """A superuser session that ran `sql` in a transaction and keeps it open (its locks held)
    until `release()`, which rolls it back: nothing it did stays."""

    def __init__(self, server: PostgresServer, database: str, sql: str) -> None:
        self.process = subprocess.Popen(
            [str(Path(server.bin_dir) / "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=server.client_env(database=database),
            text=True,
        )
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(f"BEGIN;\n{sql}\nSELECT 'held';\n")
        self.process.stdin.flush()
        answer = self.process.stdout.readline().strip()
        assert answer == "held", answer

    def release(self) -> None:
        if self.process.poll() is None:
            self.process.communicate("ROLLBACK;\n", timeout=30)


@contextmanager
def held(server: PostgresServer, database: str, sql: str) -> Iterator[HeldSession]:
    session = HeldSession(server, database, sql)
    try:
        yield session
    finally:
        session.release()


def movers_waiting_on_a_lock(server: PostgresServer, database: str) -> int:
    """Sessions of the mover's tools (libpq application name) waiting for a lock."""
    rows = server.rows(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'odoo-upgrade' "  # noqa: S608
        f"AND wait_event_type = 'Lock' AND datname = '{database}'"
    )
    return int(rows[0][0])


def wait_until(probe: Callable[[], bool], what: str, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.3)


def test_a_live_database_becomes_a_restored_verified_upgraded_one_through_operator_restarts(
    cluster: LocalCluster,
    postgres: PostgresServer,
    live_operator: RunningOperator,
    start_emulator: Callable[..., RunningEmulator],
    odoo: tuple[Namespace, OdooDatabase],
) -> None:
    ns, source = odoo
    emulator = start_emulator()
    target = f"{source.name}_18"
    source_counts = table_row_counts(postgres, source.name)
    source_files = filestore_checksums(source.filestore)

    # pg_dump waits for a sequence this session holds (the pre-flight reads none); the
    # restore's CREATE DATABASE waits for template0, held by the other session.
    with (
        held(postgres, source.name, "ALTER SEQUENCE res_partner_id_seq RENAME TO held;") as seq,
        held(postgres, "postgres", "COMMENT ON DATABASE template0 IS 'held';") as template,
    ):
        upgrade = database_upgrade(ns, "acme-to-18", emulator, source.name, target)
        wait_until(lambda: movers_waiting_on_a_lock(postgres, source.name) > 0, "pg_dump")
        obj = upgrade.get()
        assert phase_of(obj) == "Dumping", describe(obj)
        assert obj["status"]["preflight"]["completedAt"] and emulator.calls() == []

        live_operator.kill()  # mid-dump
        time.sleep(DOWNTIME_SECONDS)
        live_operator.start()
        seq.release()

        wait_until(lambda: movers_waiting_on_a_lock(postgres, "postgres") > 0, "the restore")
        obj = upgrade.get()
        assert phase_of(obj) == "Restoring", describe(obj)
        assert condition(obj, "Dumped")["status"] == "True"
        assert not postgres.database_exists(target)

        live_operator.kill()  # mid-restore
        time.sleep(DOWNTIME_SECONDS)
        live_operator.start()
        template.release()

        obj = upgrade.wait_for_phase("Succeeded", "Failed", timeout=180)

    assert phase_of(obj) == "Succeeded", describe(obj) + events_text(ns.kube, ns.name)
    status = obj["status"]
    assert len(emulator.calls("create")) == 1
    seen = [p for p in upgrade.phases_seen if p in FLOW]
    assert seen == sorted(seen, key=FLOW.index), seen
    for type_ in ("Dumped", "RequestCreated", "Uploaded", "Processed", "Downloaded", "Restored"):
        assert condition(obj, type_)["status"] == "True", type_
    # The restored database: every table and row of the source plus the upgrade's
    # attachment, `base` and every installed module at the target series, every file.
    counts = table_row_counts(postgres, target)
    assert counts == {**source_counts, "ir_attachment": source_counts["ir_attachment"] + 1}
    versions = module_versions(postgres, target)
    assert versions["base"][1] == status["restore"]["baseVersion"]
    assert all(v.startswith("18.0.") for s, v in versions.values() if s == "installed")
    new_filestore = ns.volume("odoo-data") / "filestore" / target
    files = attachment_files(postgres, target)
    assert files and all((new_filestore / f).is_file() for f in files)
    assert status["restore"]["filestoreFiles"] == source.attachments + 1
    assert status["restore"]["database"] == target
    # No half database, the source as it was, the dumps kept on the volume.
    assert not [d for d in postgres.databases() if "__restoring_" in d]
    assert table_row_counts(postgres, source.name) == source_counts
    assert filestore_checksums(source.filestore) == source_files
    dump = ns.volume() / SOURCE_PATH
    assert dump.is_file() and status["dump"]["bytes"] == dump.stat().st_size
    assert emulator.original_path(int(status["requestId"])).read_bytes() == dump.read_bytes()
    assert (ns.volume() / DESTINATION_PATH).is_file()
    # The Jobs saw the password only as a mounted Secret.
    for job in ("acme-to-18-check", "acme-to-18-dump", "acme-to-18-restore"):
        spec = ns.kube.json("get", "job", job, "-n", ns.name)
        assert postgres.app_password not in repr(spec)

    # Deleting the resource removes its Jobs, drops no database and deletes no dump.
    ns.kube.run("delete", "odooupgrade", "acme-to-18", "-n", ns.name, "--timeout=60s")
    wait_until(
        lambda: not ns.kube.run("get", "jobs", "-n", ns.name, "-o", "name").strip(),
        "the mover Jobs to be deleted",
        timeout=60,
    )
    assert postgres.database_exists(target) and postgres.database_exists(source.name)
    assert dump.is_file() and (ns.volume() / DESTINATION_PATH).is_file()


# Each bad input, as a condition naming the field, with no platform call and nothing dumped.
# (A client older than the server is covered by tests/unit/test_reconcile_database.py: this
# machine has one PostgreSQL major, and pod runner pods always find its newest client.)
BAD_INPUTS = {
    # resource name: (reason, field)
    "database-not-found": ("DatabaseNotFound", "source.database.name"),
    "auth-failed": ("DatabaseAuthenticationFailed", "source.database.connectionSecretRef"),
    "unreachable": ("DatabaseUnreachable", "source.database.connectionSecretRef"),
    "secret-missing": ("DatabaseSecretNotFound", "source.database.connectionSecretRef"),
    "key-missing": ("DatabaseSecretKeyMissing", "source.database.connectionSecretRef"),
    "target-exists": ("RestoreTargetExists", "restore.database.name"),
    "filestore-missing": ("FilestoreSourceNotFound", "restore.filestore.sourcePath"),
}
WRONG_PASSWORD = "wrong-password-Zq81"  # the refused one the test looks for


def test_each_bad_database_input_is_a_condition_naming_the_field_without_a_platform_call(
    cluster: LocalCluster,
    postgres: PostgresServer,
    live_operator: RunningOperator,
    start_emulator: Callable[..., RunningEmulator],
    odoo: tuple[Namespace, OdooDatabase],
) -> None:
    ns, source = odoo
    emulator = start_emulator()
    secrets = {
        "auth-failed": cnpg_secret(ns.name, postgres, password=WRONG_PASSWORD),
        "unreachable": cnpg_secret(ns.name, postgres, port=str(free_port())),
        "key-missing": cnpg_secret(ns.name, postgres, password=None),
    }
    for name, secret in secrets.items():
        secret["metadata"]["name"] = f"pg-{name}"
        ns.kube.apply(secret)
    postgres.psql(f'CREATE DATABASE "{source.name}_taken"')
    upgrades = {}
    for name in BAD_INPUTS:
        upgrades[name] = database_upgrade(
            ns,
            name,
            emulator,
            "no_such_database" if name == "database-not-found" else source.name,
            f"{source.name}_taken" if name == "target-exists" else f"{source.name}_{len(upgrades)}",
            secret=f"pg-{name}" if name in secrets else
            "absent-secret" if name == "secret-missing" else PG_SECRET,
            filestore_source="filestore/nowhere" if name == "filestore-missing" else None,
        )  # fmt: skip

    for name, (reason, field) in BAD_INPUTS.items():
        obj = upgrades[name].wait_until(
            lambda o, r=reason: (condition(o, "Ready") or {}).get("reason") == r,
            f"Ready=False {reason}",
            timeout=120,
        )
        ready = condition(obj, "Ready") or {}
        assert ready["status"] == "False" and field in ready["message"], (name, ready)
        assert phase_of(obj) == "Pending" and "requestId" not in obj["status"], name
        assert not ns.kube.exists("job", f"{name}-dump", ns.name), name

    assert emulator.calls() == []  # nothing asked of the platform
    assert not (ns.volume() / SOURCE_PATH).exists()  # nothing dumped
    for index in range(len(BAD_INPUTS)):  # no restore target created
        assert not postgres.database_exists(f"{source.name}_{index}")
    # The refused password and the right one appear nowhere a user or an attacker reads.
    seen = [
        ns.kube.run("get", "odooupgrades", "-n", ns.name, "-o", "yaml"),
        events_text(ns.kube, ns.name),
        live_operator.logs(),
        *(p.read_text(errors="replace") for p in (cluster.logs_dir / "pods").glob(f"{ns.name}_*")),
    ]
    for text in seen:
        assert WRONG_PASSWORD not in text and postgres.app_password not in text
