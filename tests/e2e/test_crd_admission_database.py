"""`spec.source.database` and `spec.restore` on a real kube-apiserver: bad names and paths are
refused at admission naming the field, the database fields are stored as given, and `restore`
freezes once the operator recorded `status.requestId` (like the other request fields)."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from tests.e2e.test_crd_admission import RESOURCE, create, kube, manifest, namespace, patch_spec
from tests.support.scenario import Kube

pytestmark = pytest.mark.e2e
__all__ = ["kube", "namespace"]  # the module fixtures of test_crd_admission, shared


PG_SECRET = "acme-pg-app"  # the connection Secret's name


def database(name: str = "acme") -> dict[str, Any]:
    return {"name": name, "connectionSecretRef": {"name": PG_SECRET}}


def with_databases(namespace: str, name: str, **restore_changes: Any) -> dict[str, Any]:
    obj = manifest(namespace, name)
    obj["spec"]["source"]["database"] = database()
    restore: dict[str, Any] = {
        "database": database("acme_18_test"),
        "filestore": {
            "claimName": "odoo-data",
            "sourcePath": "filestore/acme",
            "path": "filestore/acme_18_test",
        },
    }
    for key, value in restore_changes.items():
        if key in ("claimName", "sourcePath", "path"):
            restore["filestore"][key] = value
        else:
            restore[key] = value
    obj["spec"]["restore"] = restore
    return obj


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"database": database("x" * 64)}, "spec.restore.database.name"),
        ({"database": {"name": "acme_18"}}, "spec.restore.database.connectionSecretRef"),
        ({"sourcePath": "/srv/odoo/filestore/acme"}, "spec.restore.filestore.sourcePath"),
        ({"path": "filestore/../../etc"}, "spec.restore.filestore.path"),
        ({"path": "filestore/acme/inside"}, "spec.restore.filestore.path"),
        ({"path": "filestore/acme"}, "spec.restore.filestore.path"),
    ],
    ids=lambda v: json.dumps(v) if isinstance(v, dict) else str(v),
)
def test_bad_database_fields_are_refused_naming_the_field(
    kube: Kube, namespace: str, changes: dict[str, Any], field: str
) -> None:
    name = f"bad-{uuid.uuid4().hex[:6]}"
    refused = create(kube, with_databases(namespace, name, **changes))
    assert refused.returncode != 0, f"accepted: {changes}"
    assert field in refused.stderr, refused.stderr
    assert not kube.exists(RESOURCE, name, namespace)


def test_a_source_database_without_a_secret_is_refused(kube: Kube, namespace: str) -> None:
    obj = with_databases(namespace, "no-secret")
    obj["spec"]["source"]["database"] = {"name": "acme"}
    refused = create(kube, obj)
    assert refused.returncode != 0
    assert "spec.source.database.connectionSecretRef" in refused.stderr


def test_restore_is_frozen_once_the_request_exists_and_kept_as_given(
    kube: Kube, namespace: str
) -> None:
    assert create(kube, with_databases(namespace, "db-frozen")).returncode == 0
    stored = kube.json("get", RESOURCE, "db-frozen", "-n", namespace)["spec"]
    assert stored["source"]["database"] == database()
    assert stored["restore"]["filestore"]["path"] == "filestore/acme_18_test"
    # Before the request exists the user may still change where it is restored.
    changed = {"database": database("acme_18_other")}
    assert patch_spec(kube, namespace, "db-frozen", {"restore": changed}).returncode == 0
    kube.run(
        "patch", RESOURCE, "db-frozen", "-n", namespace, "--subresource=status", "--type=merge",
        "-p", json.dumps({"status": {"requestId": 10534, "phase": "Uploading"}}),
    )  # fmt: skip
    refused = patch_spec(kube, namespace, "db-frozen", {"restore": {"database": database("b")}})
    assert refused.returncode != 0
    assert "spec.restore" in refused.stderr and "immutable" in refused.stderr
    source = {"database": database("other")}
    refused = patch_spec(kube, namespace, "db-frozen", {"source": source})
    assert refused.returncode != 0 and "spec.source" in refused.stderr
    refused = patch_spec(kube, namespace, "db-frozen", {"restore": None})
    assert refused.returncode != 0 and "spec.restore" in refused.stderr


def test_source_is_frozen_once_the_dump_started_before_any_request(
    kube: Kube, namespace: str
) -> None:
    """The dump is made from source.database into source.path before `create`: a source edited
    after the dump Job started would upload the old database's dump under the new spec."""
    assert create(kube, with_databases(namespace, "dump-frozen")).returncode == 0
    other = {"database": database("acme_other")}
    # Before the dump starts the user may still name another database.
    assert patch_spec(kube, namespace, "dump-frozen", {"source": other}).returncode == 0
    kube.run(
        "patch", RESOURCE, "dump-frozen", "-n", namespace, "--subresource=status", "--type=merge",
        "-p", json.dumps({"status": {"phase": "Dumping",
                                     "dump": {"startedAt": "2026-12-02T20:00:00Z"}}}),
    )  # fmt: skip
    refused = patch_spec(kube, namespace, "dump-frozen", {"source": {"database": database("b")}})
    assert refused.returncode != 0
    assert "spec.source" in refused.stderr and "status.dump" in refused.stderr, refused.stderr
    refused = patch_spec(kube, namespace, "dump-frozen", {"source": {"path": "dumps/other.dump"}})
    assert refused.returncode != 0 and "spec.source" in refused.stderr
    stored = kube.json("get", RESOURCE, "dump-frozen", "-n", namespace)["spec"]["source"]
    assert stored["database"] == database("acme_other")
    # The rest of the spec that defines no dump stays editable until the request exists.
    assert patch_spec(kube, namespace, "dump-frozen", {"email": "ops@example.com"}).returncode == 0
