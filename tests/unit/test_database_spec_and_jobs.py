"""`spec.source.database` and `spec.restore`: parsed into typed fields (errors name the field),
and the check, dump and restore Jobs built from them (the mover contract: names, owner, labels,
locked-down pods, the password only as a mounted Secret, read-only where only read)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from odoo_upgrade.controller import settings
from odoo_upgrade.controller.jobs import (
    Owner,
    check_job_spec,
    dump_job_spec,
    mover_job_spec,
    restore_job_spec,
)
from odoo_upgrade.controller.spec import (
    DatabaseRef,
    FilestoreSpec,
    SpecError,
    UpgradeSpec,
    parse_spec,
)
from odoo_upgrade.request.mover_result import Direction
from odoo_upgrade.request.steps import Progress, Step, next_step

REPO = Path(__file__).resolve().parents[2]
OWNER = Owner(name="acme-to-18", namespace="odoo", uid="0b1c-uid")


def database_spec(**overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "target": "18.0",
        "email": "ops@acme.example",
        "contractSecretRef": {"name": "odoo-contract"},
        "source": {
            "claimName": "odoo-backups",
            "path": "dumps/acme.dump",
            "database": {"name": "acme", "connectionSecretRef": {"name": "acme-pg-app"}},
        },
        "destination": {"claimName": "odoo-backups", "path": "upgraded/acme-18.dump"},
        "restore": {
            "database": {"name": "acme_18", "connectionSecretRef": {"name": "acme-pg-app"}},
            "filestore": {
                "claimName": "odoo-data",
                "sourcePath": "filestore/acme",
                "path": "filestore/acme_18",
            },
        },
    }
    spec.update(overrides)
    return spec


def parsed(**overrides: Any) -> UpgradeSpec:
    return parse_spec(database_spec(**overrides))


# -- the spec -------------------------------------------------------------------------------


def test_database_fields_are_parsed_into_typed_fields() -> None:
    spec = parsed()
    assert spec.source_database == DatabaseRef("acme", "acme-pg-app")
    assert spec.restore is not None
    assert spec.restore.database == DatabaseRef("acme_18", "acme-pg-app")
    assert spec.restore.filestore == FilestoreSpec(
        "odoo-data", "filestore/acme", "filestore/acme_18"
    )
    assert spec.touches_databases


def test_a_dump_file_spec_is_unchanged_by_the_database_fields() -> None:
    spec = parse_spec(
        {
            "target": "18.0",
            "email": "ops@acme.example",
            "contractSecretRef": {"name": "c"},
            "source": {"claimName": "b", "path": "dumps/acme.dump"},
            "destination": {"claimName": "b", "path": "upgraded/acme.dump"},
        }
    )
    assert spec.source_database is None and spec.restore is None and not spec.touches_databases


def test_a_restore_without_a_filestore_is_fine() -> None:
    spec = parsed(restore={"database": {"name": "n", "connectionSecretRef": {"name": "s"}}})
    assert spec.restore is not None and spec.restore.filestore is None


def _without(path: str) -> dict[str, Any]:
    spec = database_spec()
    *parents, last = path.split(".")
    node = spec
    for part in parents:
        node = node[part]
    del node[last]
    return spec


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        (_without("source.database.name"), "spec.source.database.name: is required"),
        (
            _without("source.database.connectionSecretRef"),
            "spec.source.database.connectionSecretRef.name: is required",
        ),
        (_without("restore.database"), "spec.restore.database: is required"),
        (_without("restore.database.name"), "spec.restore.database.name: is required"),
        (_without("restore.filestore.claimName"), "spec.restore.filestore.claimName"),
        (_without("restore.filestore.path"), "spec.restore.filestore.path: is required"),
    ],
)
def test_missing_database_fields_are_named(spec: dict[str, Any], field: str) -> None:
    with pytest.raises(SpecError) as raised:
        parse_spec(spec)
    assert str(raised.value).startswith(field)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"name": "x" * 64}, "spec.restore.database.name"),
        ({"sourcePath": "/srv/filestore"}, "spec.restore.filestore.sourcePath: must be a relative"),
        ({"path": "../elsewhere"}, 'spec.restore.filestore.path: must not contain ".."'),
        ({"path": "filestore/acme/inside"}, "spec.restore.filestore.path"),
        ({"sourcePath": "filestore", "path": "filestore/acme_18"}, "spec.restore.filestore.path"),
    ],
)
def test_bad_database_values_are_named(change: dict[str, str], field: str) -> None:
    spec = database_spec()
    if "name" in change:
        spec["restore"]["database"].update(change)
    else:
        spec["restore"]["filestore"].update(change)
    with pytest.raises(SpecError) as raised:
        parse_spec(spec)
    assert str(raised.value).startswith(field)


def test_the_database_sample_parses() -> None:
    sample = yaml.safe_load((REPO / "deploy/samples/database/odooupgrade.yaml").read_text())
    spec = parse_spec(sample["spec"])
    assert spec.source_database is not None and spec.restore is not None
    assert spec.restore.filestore is not None


# -- the step order -------------------------------------------------------------------------


def test_check_then_dump_come_before_create_and_restore_after_download() -> None:
    wanted = {"check_wanted": True, "dump_wanted": True, "restore_wanted": True}
    assert next_step(Progress(**wanted)) is Step.CHECK
    assert next_step(Progress(**wanted, checked=True)) is Step.DUMP
    assert next_step(Progress(**wanted, checked=True, dumped=True)) is Step.CREATE
    done = {"created": True, "uploaded": True, "processed": True, "upgraded": True}
    assert next_step(Progress(**wanted, **done, downloaded=True)) is Step.RESTORE
    assert next_step(Progress(**wanted, **done, downloaded=True, restored=True)) is Step.FINISH
    # Once dumped (or created) the check is not repeated, whatever the record says.
    assert next_step(Progress(**wanted, dumped=True)) is Step.CREATE


# -- the Jobs -------------------------------------------------------------------------------


@pytest.fixture(params=["check", "dump", "restore"])
def job(request: pytest.FixtureRequest) -> dict[str, Any]:
    return mover_job_spec(OWNER, parsed(), Direction(request.param))


def pod(job: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = job["spec"]["template"]["spec"]
    return spec


def test_database_jobs_follow_the_mover_contract(job: dict[str, Any]) -> None:
    direction = job["metadata"]["name"].rsplit("-", 1)[1]
    assert job["metadata"]["name"] == f"acme-to-18-{direction}"
    assert job["metadata"]["ownerReferences"][0]["uid"] == "0b1c-uid"
    assert job["metadata"]["labels"]["upgrade.odoo-operator.io/upgrade-uid"] == "0b1c-uid"
    spec = pod(job)
    assert spec["automountServiceAccountToken"] is False
    assert spec["securityContext"]["runAsNonRoot"] is True
    (container,) = spec["containers"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["command"][:3] == ["odoo-upgrade", "mover", direction]
    assert container["command"][-2:] == ["--termination-log", "/dev/termination-log"]
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"


def test_the_password_comes_only_from_a_mounted_connection_secret(job: dict[str, Any]) -> None:
    spec = pod(job)
    (container,) = spec["containers"]
    secrets = {v["name"]: v["secret"]["secretName"] for v in spec["volumes"] if "secret" in v}
    # One volume for the one Secret both database references name; no request Secret.
    assert sorted(secrets.values()) == ["acme-pg-app"]
    assert all("valueFrom" not in e and "envFrom" not in container for e in container["env"])
    assert {"name": "TMPDIR", "value": "/var/run/odoo-upgrade/tmp"} in container["env"]
    tmp = next(v for v in spec["volumes"] if v["name"] == "private-tmp")
    assert tmp["emptyDir"]["medium"] == "Memory"
    secret_mounts = [m for m in container["volumeMounts"] if m["name"] in secrets]
    assert secret_mounts and all(m["readOnly"] for m in secret_mounts)


def mounts_by_path(job: dict[str, Any]) -> dict[str, dict[str, Any]]:
    spec = pod(job)
    (container,) = spec["containers"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    return {
        m["mountPath"]: {**volumes[m["name"]], "readOnly": m.get("readOnly", False)}
        for m in container["volumeMounts"]
    }


def test_check_reads_everything_and_writes_nothing() -> None:
    job = check_job_spec(OWNER, parsed())
    mounts = mounts_by_path(job)
    claims = {p: m for p, m in mounts.items() if "persistentVolumeClaim" in m}
    assert {m["persistentVolumeClaim"]["claimName"] for m in claims.values()} == {
        "odoo-backups",
        "odoo-data",
    }
    assert all(m["readOnly"] and m["persistentVolumeClaim"]["readOnly"] for m in claims.values())
    args = pod(job)["containers"][0]["command"]
    for flag, value in [
        ("--source-database", "acme"),
        ("--dump-destination", "/data/source/dumps/acme.dump"),
        ("--restore-database", "acme_18"),
        ("--filestore-source", "/data/filestore/filestore/acme"),
        ("--filestore-path", "/data/filestore/filestore/acme_18"),
        ("--token", "0b1c-uid"),
        ("--target", "18.0"),
    ]:
        assert args[args.index(flag) + 1] == value


def test_dump_writes_the_source_claim() -> None:
    job = dump_job_spec(OWNER, parsed())
    mounts = mounts_by_path(job)
    assert mounts["/data/source"]["persistentVolumeClaim"]["claimName"] == "odoo-backups"
    assert mounts["/data/source"]["readOnly"] is False
    args = pod(job)["containers"][0]["command"]
    assert args[args.index("--destination") + 1] == "/data/source/dumps/acme.dump"
    assert args[args.index("--token") + 1] == "0b1c-uid"  # a rerun recognises its own dump


def test_restore_reads_the_download_and_writes_the_filestore_claim() -> None:
    job = restore_job_spec(OWNER, parsed())
    mounts = mounts_by_path(job)
    assert mounts["/data/destination"]["readOnly"] is True
    assert mounts["/data/filestore"]["readOnly"] is False
    args = pod(job)["containers"][0]["command"]
    assert args[args.index("--dump") + 1] == "/data/destination/upgraded/acme-18.dump"
    assert args[args.index("--token") + 1] == "0b1c-uid"


def test_one_claim_for_download_and_filestore_is_one_volume_mounted_twice() -> None:
    spec = database_spec()
    spec["restore"]["filestore"]["claimName"] = "odoo-backups"
    job = restore_job_spec(OWNER, parse_spec(spec))
    claims = [v for v in pod(job)["volumes"] if "persistentVolumeClaim" in v]
    assert len(claims) == 1 and claims[0]["persistentVolumeClaim"]["readOnly"] is False
    mounts = mounts_by_path(job)
    assert mounts["/data/destination"]["readOnly"] and not mounts["/data/filestore"]["readOnly"]


def test_the_database_image_setting_picks_the_image_of_database_jobs_only() -> None:
    settings.configure(settings.OperatorSettings(database_image="registry.example/pg17:1"))
    try:
        images = {
            d: mover_job_spec(OWNER, parsed(), d)["spec"]["template"]["spec"]["containers"][0][
                "image"
            ]
            for d in Direction
        }
    finally:
        settings.configure(settings.OperatorSettings())
    assert images[Direction.CHECK] == images[Direction.DUMP] == images[Direction.RESTORE]
    assert images[Direction.DUMP] == "registry.example/pg17:1"
    assert images[Direction.UPLOAD] == images[Direction.DOWNLOAD] != "registry.example/pg17:1"
