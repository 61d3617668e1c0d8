"""Every invalid OdooUpgrade spec is refused by the API server, naming the field at fault.

Only the CRD is needed (no operator): the schema and its CEL rules are the admission check a
user meets with `kubectl apply` or Argo CD. Each row is one mistake a user can make; the test
asserts the request is refused, nothing is stored, and the message names the field.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.chaos.ledger import RunLedger

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
CRD = REPO / "crds" / "odooupgrades.upgrade.odoo-operator.io.yaml"

Spec = dict[str, Any]


def valid_spec() -> Spec:
    """The example of DESIGN.md §3: accepted as it is."""
    return {
        "target": "18.0",
        "aim": "test",
        "email": "ops@acme.example",
        "contractSecretRef": {"name": "odoo-contract", "key": "contract"},
        "filename": "acme.dump",
        "source": {"claimName": "odoo-backups", "path": "dumps/acme.dump"},
        "destination": {
            "claimName": "odoo-backups",
            "path": "upgraded/acme-18.dump",
            "format": "archive",
        },
        "transport": "auto",
        "platform": {"url": "https://upgrade.odoo.com", "pollInterval": "60s"},
    }


def without(*path: str) -> Callable[[Spec], None]:
    def mutate(spec: Spec) -> None:
        node = spec
        for part in path[:-1]:
            node = node[part]
        del node[path[-1]]

    return mutate


def setting(value: Any, *path: str) -> Callable[[Spec], None]:
    def mutate(spec: Spec) -> None:
        node = spec
        for part in path[:-1]:
            node = node[part]
        node[path[-1]] = value

    return mutate


def with_upgrade_request(mutate: Callable[[Spec], None]) -> Callable[[Spec], None]:
    """`mutate` applied to the valid spec turned to the upgrade-request API."""

    def both(spec: Spec) -> None:
        spec["platform"]["api"] = "upgrade-request"
        spec["transport"] = "rsync"
        spec["destination"]["path"] = "upgraded/acme-18"
        mutate(spec)

    return both


@dataclass(frozen=True)
class BadSpec:
    """One invalid spec: how to break the valid one, and the field the refusal must name."""

    case: str
    mutate: Callable[[Spec], None]
    field: str


BAD_SPECS = [
    BadSpec("missing target", without("target"), "spec.target"),
    BadSpec("missing email", without("email"), "spec.email"),
    BadSpec("missing contractSecretRef", without("contractSecretRef"), "spec.contractSecretRef"),
    BadSpec(
        "missing contractSecretRef.name",
        without("contractSecretRef", "name"),
        "spec.contractSecretRef.name",
    ),
    BadSpec("missing source", without("source"), "spec.source"),
    BadSpec("missing source.claimName", without("source", "claimName"), "spec.source.claimName"),
    BadSpec("missing source.path", without("source", "path"), "spec.source.path"),
    BadSpec("missing destination.path", without("destination", "path"), "spec.destination.path"),
    BadSpec("target without minor", setting("18", "target"), "spec.target"),
    BadSpec("target with v prefix", setting("v18.0", "target"), "spec.target"),
    BadSpec("target with patch level", setting("18.0.1", "target"), "spec.target"),
    BadSpec("target saas with dash", setting("saas-17.2", "target"), "spec.target"),
    BadSpec("target empty", setting("", "target"), "spec.target"),
    BadSpec("aim unknown", setting("staging", "aim"), "spec.aim"),
    BadSpec("email without domain", setting("ops@", "email"), "spec.email"),
    BadSpec("email without at", setting("ops.acme.example", "email"), "spec.email"),
    BadSpec("source path absolute", setting("/etc/passwd", "source", "path"), "spec.source.path"),
    BadSpec(
        "source path dotdot", setting("../other/acme.dump", "source", "path"), "spec.source.path"
    ),
    BadSpec(
        "source path dotdot inside",
        setting("dumps/../../x.dump", "source", "path"),
        "spec.source.path",
    ),
    BadSpec(
        "destination path absolute",
        setting("/upgraded/acme.dump", "destination", "path"),
        "spec.destination.path",
    ),
    BadSpec(
        "destination path dotdot",
        setting("upgraded/../../acme.dump", "destination", "path"),
        "spec.destination.path",
    ),
    BadSpec(
        "destination format unknown",
        setting("zip", "destination", "format"),
        "spec.destination.format",
    ),
    BadSpec("transport unknown", setting("ftp", "transport"), "spec.transport"),
    # Faster than Odoo's own script polls the platform, or no interval at all.
    BadSpec(
        "poll interval 1s", setting("1s", "platform", "pollInterval"), "spec.platform.pollInterval"
    ),
    BadSpec(
        "poll interval 4s", setting("4s", "platform", "pollInterval"), "spec.platform.pollInterval"
    ),
    BadSpec(
        "poll interval 0s", setting("0s", "platform", "pollInterval"), "spec.platform.pollInterval"
    ),
    BadSpec(
        "poll interval empty", setting("", "platform", "pollInterval"), "spec.platform.pollInterval"
    ),
    # A directory is not a dump.
    BadSpec("source path dot", setting(".", "source", "path"), "spec.source.path"),
    BadSpec("source path empty", setting("", "source", "path"), "spec.source.path"),
    BadSpec("source path trailing slash", setting("dumps/", "source", "path"), "spec.source.path"),
    BadSpec("source path ends in dot", setting("dumps/.", "source", "path"), "spec.source.path"),
    BadSpec("destination path dot", setting(".", "destination", "path"), "spec.destination.path"),
    BadSpec("destination path empty", setting("", "destination", "path"), "spec.destination.path"),
    BadSpec(
        "destination path trailing slash",
        setting("upgraded/", "destination", "path"),
        "spec.destination.path",
    ),
    # One platform API's settings with the other: refused naming both fields.
    BadSpec("platform api unknown", setting("upgrade/v2", "platform", "api"), "spec.platform.api"),
    BadSpec("rsync with database-v1", setting("rsync", "transport"), "spec.platform.api"),
    BadSpec(
        "https with upgrade-request",
        with_upgrade_request(setting("https", "transport")),
        "spec.platform.api",
    ),
    BadSpec(
        "sftp with upgrade-request",
        with_upgrade_request(setting("sftp", "transport")),
        "spec.transport",
    ),
    BadSpec("env with database-v1", setting(["A=1"], "platform", "env"), "spec.platform.api"),
    BadSpec(
        "env without equals",
        with_upgrade_request(setting(["ODOO_FLAG"], "platform", "env")),
        "spec.platform.env",
    ),
    BadSpec(
        "env name with a dash",
        with_upgrade_request(setting(["MY-FLAG=1"], "platform", "env")),
        "spec.platform.env",
    ),
    BadSpec(
        "sql format with upgrade-request",
        with_upgrade_request(setting("sql", "destination", "format")),
        "spec.destination.format",
    ),
    BadSpec(
        "sftp host key with upgrade-request",
        with_upgrade_request(setting({"hostKey": "ssh-ed25519 AAAAC3Nz"}, "sftp")),
        "spec.sftp.hostKey",
    ),
]

# Edge values that must stay accepted (the refusals above are not broader than meant).
GOOD_EDGES = [
    ("poll interval 5s", setting("5s", "platform", "pollInterval")),
    ("poll interval 1m", setting("1m", "platform", "pollInterval")),
    ("poll interval 1m1s", setting("1m1s", "platform", "pollInterval")),
    ("dots inside a name", setting("dumps/acme..v1.dump", "source", "path")),
    ("hidden file", setting("upgraded/.acme.dump", "destination", "path")),
]


def manifest(name: str, spec: Spec) -> str:
    return json.dumps(
        {
            "apiVersion": "upgrade.odoo-operator.io/v1alpha1",
            "kind": "OdooUpgrade",
            "metadata": {"name": name},
            "spec": spec,
        }
    )


@pytest.fixture(scope="module")
def crd(cluster: Any) -> None:
    """The OdooUpgrade CRD, applied and established (no operator)."""
    applied = cluster.kubectl(
        "apply", "--server-side", "--force-conflicts", "-f", str(CRD), check=False
    )
    assert applied.returncode == 0, applied.stderr
    established = cluster.kubectl(
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/odooupgrades.upgrade.odoo-operator.io",
        check=False,
    )
    assert established.returncode == 0, established.stderr


def valid_upgrade_request_spec() -> Spec:
    spec = valid_spec()
    with_upgrade_request(setting(["ODOO_LOG=debug", "EMPTY="], "platform", "env"))(spec)
    return spec


def test_the_valid_spec_is_accepted(crd: None, cluster: Any, namespace: str) -> None:
    # Without this control every row below could pass for a reason unrelated to its field.
    created = cluster.kubectl(
        "-n", namespace, "apply", "-f", "-", input=manifest("valid", valid_spec()), check=False
    )
    assert created.returncode == 0, created.stderr
    ours = manifest("valid-upgrade-request", valid_upgrade_request_spec())
    created = cluster.kubectl("-n", namespace, "apply", "-f", "-", input=ours, check=False)
    assert created.returncode == 0, created.stderr
    auto = valid_upgrade_request_spec()
    auto["transport"] = "auto"  # auto is rsync there
    created = cluster.kubectl(
        "-n", namespace, "apply", "-f", "-", input=manifest("auto", auto), check=False
    )
    assert created.returncode == 0, created.stderr


@pytest.mark.parametrize(("case", "mutate"), GOOD_EDGES, ids=[case for case, _ in GOOD_EDGES])
def test_edge_values_are_accepted(
    crd: None, cluster: Any, namespace: str, case: str, mutate: Callable[[Spec], None]
) -> None:
    spec = copy.deepcopy(valid_spec())
    mutate(spec)
    name = "good-" + "-".join(case.split()).lower()
    created = cluster.kubectl(
        "-n", namespace, "apply", "-f", "-", input=manifest(name, spec), check=False
    )
    assert created.returncode == 0, f"{case}: {created.stderr}"


@pytest.mark.parametrize("bad", BAD_SPECS, ids=[b.case for b in BAD_SPECS])
def test_invalid_spec_is_refused_at_admission_naming_the_field(
    crd: None, cluster: Any, namespace: str, bad: BadSpec, record_property: Any
) -> None:
    spec = copy.deepcopy(valid_spec())
    bad.mutate(spec)
    name = "bad-" + "-".join(bad.case.split()).lower().replace(".", "-")

    refused = cluster.kubectl(
        "-n", namespace, "apply", "-f", "-", input=manifest(name, spec), check=False
    )

    assert refused.returncode != 0, f"{bad.case}: accepted, but must be refused"
    assert bad.field in refused.stderr, (
        f"{bad.case}: the refusal must name {bad.field}: {refused.stderr.strip()}"
    )
    stored = cluster.kubectl("-n", namespace, "get", "odooupgrade", name, check=False)
    assert stored.returncode != 0, f"{bad.case}: refused, yet stored"
    RunLedger(record_property).input(bad.case)


REQUEST_FIELDS = [
    ("target", "17.0"),
    ("aim", "production"),
    ("email", "someone.else@acme.example"),
    ("filename", "other.dump"),
]


@pytest.mark.parametrize(("field", "value"), REQUEST_FIELDS, ids=[f for f, _ in REQUEST_FIELDS])
def test_request_defining_field_cannot_change_once_the_request_exists(
    crd: None, cluster: Any, namespace: str, field: str, value: str, record_property: Any
) -> None:
    name = f"immutable-{field.lower()}"
    created = cluster.kubectl(
        "-n", namespace, "apply", "-f", "-", input=manifest(name, valid_spec()), check=False
    )
    assert created.returncode == 0, created.stderr
    # Before the request exists the field may still be corrected...
    early = valid_spec()
    early[field] = value
    corrected = cluster.kubectl(
        "-n", namespace, "apply", "-f", "-", input=manifest(name, early), check=False
    )
    assert corrected.returncode == 0, (
        f"{field} must be editable before the request: {corrected.stderr}"
    )
    # ...once the operator has recorded a request id it may not: the platform already has it.
    marked = cluster.kubectl(
        "-n",
        namespace,
        "patch",
        "odooupgrade",
        name,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": {"requestId": 10534}}),
        check=False,
    )
    assert marked.returncode == 0, marked.stderr

    refused = cluster.kubectl(
        "-n", namespace, "apply", "-f", "-", input=manifest(name, valid_spec()), check=False
    )

    assert refused.returncode != 0, f"changing {field} after the request was accepted"
    assert field in refused.stderr, f"the refusal must name {field}: {refused.stderr.strip()}"
    stored = cluster.kubectl("-n", namespace, "get", "odooupgrade", name, "-o", "json", check=False)
    assert json.loads(stored.stdout)["spec"][field] == value
    RunLedger(record_property).input(f"change {field} after the request exists")


PLATFORM_FIELDS = [("api", "database-v1"), ("env", ["ODOO_LOG=info"])]


@pytest.mark.parametrize(("field", "value"), PLATFORM_FIELDS, ids=[f for f, _ in PLATFORM_FIELDS])
def test_platform_api_and_env_cannot_change_once_the_request_exists(
    crd: None, cluster: Any, namespace: str, field: str, value: Any, record_property: Any
) -> None:
    name = f"immutable-platform-{field}"
    ours = manifest(name, valid_upgrade_request_spec())
    created = cluster.kubectl("-n", namespace, "apply", "-f", "-", input=ours, check=False)
    assert created.returncode == 0, created.stderr
    marked = cluster.kubectl(
        "-n",
        namespace,
        "patch",
        "odooupgrade",
        name,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": {"requestId": 70001}}),
        check=False,
    )
    assert marked.returncode == 0, marked.stderr
    changed = valid_upgrade_request_spec()
    changed["platform"][field] = value
    if field == "api":  # a database-v1 spec: its own transport and no env
        changed["transport"], changed["platform"]["env"] = "https", []
    refused = cluster.kubectl(
        "-n", namespace, "apply", "-f", "-", input=manifest(name, changed), check=False
    )
    assert refused.returncode != 0, f"changing platform.{field} after the request was accepted"
    assert f"spec.platform.{field} is immutable" in refused.stderr, refused.stderr
    RunLedger(record_property).input(f"change platform.{field} after the request exists")
