"""The CRD teaches the resource (`kubectl explain`) and declares every status field the
controller writes (undeclared fields would be pruned by the API server)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from odoo_upgrade.controller import conditions as cond
from odoo_upgrade.controller.spec import MAX_ENV_VARS, MIN_POLL_INTERVAL
from odoo_upgrade.controller.status import (
    downloaded_set_status,
    downloaded_status,
    dumped_status,
    platform_status,
    preflight_status,
    restored_status,
    uploaded_status,
)
from odoo_upgrade.platform import Failure, RequestStatus, UpgradeRequest
from odoo_upgrade.platform import upgrade_request_platform as upgrade_request
from odoo_upgrade.platform.v1 import public_status
from odoo_upgrade.request.mover_result import MoverResult
from odoo_upgrade.request.platform import ENV_VAR

CRD_PATH = (
    Path(__file__).resolve().parents[2] / "crds" / "odooupgrades.upgrade.odoo-operator.io.yaml"
)


@pytest.fixture(scope="module")
def crd() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(CRD_PATH.read_text())
    return loaded


def version(crd: dict[str, Any]) -> dict[str, Any]:
    (only,) = crd["spec"]["versions"]
    assert only["name"] == "v1alpha1"
    return dict(only)


def schema(crd: dict[str, Any]) -> dict[str, Any]:
    return dict(version(crd)["schema"]["openAPIV3Schema"])


def walk(node: dict[str, Any], path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, node
    for name, child in (node.get("properties") or {}).items():
        yield from walk(child, f"{path}.{name}")
    if "items" in node:
        yield from walk(node["items"], f"{path}[]")


def test_names_scope_and_short_name(crd: dict[str, Any]) -> None:
    assert crd["metadata"]["name"] == "odooupgrades.upgrade.odoo-operator.io"
    assert crd["spec"]["group"] == "upgrade.odoo-operator.io"
    assert crd["spec"]["scope"] == "Namespaced"
    assert crd["spec"]["names"]["kind"] == "OdooUpgrade"
    assert "odooup" in crd["spec"]["names"]["shortNames"]
    assert version(crd)["subresources"] == {"status": {}}


def test_every_field_has_a_type_and_a_description(crd: dict[str, Any]) -> None:
    missing = [
        path
        for path, node in walk(schema(crd), "")
        if path != ".metadata" and ("type" not in node or not node.get("description"))
    ]
    assert missing == []


def test_printer_columns(crd: dict[str, Any]) -> None:
    columns = {c["name"]: c["jsonPath"] for c in version(crd)["additionalPrinterColumns"]}
    assert columns == {
        "Phase": ".status.phase",
        "Target": ".spec.target",
        "Request": ".status.requestId",
        "Platform": ".status.platform.state",
        "Progress": ".status.progress",
        "Age": ".metadata.creationTimestamp",
    }


def test_spec_defaults_enums_and_target_pattern(crd: dict[str, Any]) -> None:
    spec = schema(crd)["properties"]["spec"]
    props = spec["properties"]
    assert set(spec["required"]) == {
        "target",
        "email",
        "contractSecretRef",
        "source",
        "destination",
    }
    assert props["target"]["pattern"] == r"^(saas~)?\d+\.\d+$"
    assert props["aim"] == {**props["aim"], "enum": ["test", "production"], "default": "test"}
    assert props["transport"]["enum"] == ["auto", "https", "sftp", "rsync"]
    assert props["transport"]["default"] == "auto"
    assert props["destination"]["properties"]["format"]["default"] == "archive"
    assert props["platform"]["properties"]["url"]["default"] == "https://upgrade.odoo.com"
    assert props["platform"]["properties"]["pollInterval"]["default"] == "60s"
    api = props["platform"]["properties"]["api"]
    assert api["enum"] == ["database-v1", "upgrade-request"] and api["default"] == "database-v1"
    env = props["platform"]["properties"]["env"]
    assert env["type"] == "array" and env["maxItems"] == MAX_ENV_VARS
    assert env["items"]["pattern"] == ENV_VAR.pattern


def test_each_apis_settings_are_refused_with_the_other_naming_both_fields(
    crd: dict[str, Any],
) -> None:
    rules = schema(crd)["properties"]["spec"]["x-kubernetes-validations"]
    by_field = {r["fieldPath"]: r for r in rules if "api" in r["rule"]}
    assert {".transport", ".platform.env", ".destination.format", ".sftp.hostKey"} <= set(by_field)
    for rule in rules:
        assert "spec.platform.api" in rule["message"], rule
    transport_messages = [r["message"] for r in rules if r["fieldPath"] == ".transport"]
    assert len(transport_messages) == 2
    assert all("spec.transport" in m for m in transport_messages)


def test_paths_are_checked_relative_and_without_dotdot(crd: dict[str, Any]) -> None:
    props = schema(crd)["properties"]["spec"]["properties"]
    for side in ("source", "destination"):
        rules = [r["rule"] for r in props[side]["properties"]["path"]["x-kubernetes-validations"]]
        assert any("startsWith('/')" in r for r in rules)
        assert any("[.][.]" in r for r in rules)
        # A directory is no dump: ".", "dumps/" and "dumps/." are refused (empty by minLength).
        assert any("endsWith('/')" in r and "self != '.'" in r for r in rules)
        assert props[side]["properties"]["path"]["minLength"] == 1


def test_poll_interval_is_at_least_the_interval_of_odoos_own_script(crd: dict[str, Any]) -> None:
    poll = schema(crd)["properties"]["spec"]["properties"]["platform"]["properties"]["pollInterval"]
    (rule,) = poll["x-kubernetes-validations"]
    assert "duration(self) >= duration('5s')" in " ".join(rule["rule"].split())
    assert "self != ''" in rule["rule"]
    assert "5s" in rule["message"]
    assert MIN_POLL_INTERVAL == 5.0  # the same floor as the operator's own check of the spec


def test_request_defining_fields_are_immutable_once_the_request_exists(
    crd: dict[str, Any],
) -> None:
    rules = schema(crd)["x-kubernetes-validations"]
    guarded = {r["fieldPath"] for r in rules if "oldSelf.status.requestId" in r["rule"]}
    assert guarded == {
        ".spec.target",
        ".spec.aim",
        ".spec.email",
        ".spec.contractSecretRef",
        ".spec.filename",
        ".spec.timezone",
        ".spec.source",
        ".spec.restore",
        ".spec.transport",
        ".spec.platform.url",
        ".spec.platform.api",
        ".spec.platform.env",
    }
    # The dump is made from spec.source before the request exists: frozen from its start.
    (source,) = (r for r in rules if r["fieldPath"] == ".spec.source")
    assert "!has(oldSelf.status.dump)" in source["rule"], source["rule"]


def a_full_status() -> dict[str, Any]:
    """A status with every field the controller writes, built by the controller's own code."""
    request = UpgradeRequest.from_json(
        {
            "id": 10534,
            "key": "Aw7pItGVKFuZ_FOR3U8VFQ==",
            "state": "done",
            "issue_stage": "new",
            "estimated_time": "01:00",
            "processed_at": "2026-01-01 00:00:00",
            "elapsed": "00:10",
            "database_version": "17.0",
            "postgresql": "16",
            "compressions": ["pgdmp_custom"],
            "filesize": "912.99 Kb",
            "customer_message": "hello",
        }
    )
    conditions: list[dict[str, Any]] = []
    for type_ in cond.CONDITION_TYPES:
        conditions = cond.set_condition(conditions, type_, cond.TRUE, "R", "m", generation=2)
    result = MoverResult.from_json({"bytes": 3, "sha256": "ab", "attempts": 2, "transport": "sftp"})
    upload = {**uploaded_status(result, "auto"), "startedAt": cond.now_rfc3339()}
    download = {**downloaded_status(result, "upgraded/a.dump"), "startedAt": cond.now_rfc3339()}
    checked = MoverResult.from_json(
        {"source": {"serverVersion": "15.18"}, "restore": {"serverVersion": "16.2"}}
    )
    dumped = MoverResult.from_json({"bytes": 5, "sha256": "cd", "serverVersion": "15.18"})
    restored = MoverResult.from_json(
        {"database": "acme_18", "baseVersion": "18.0.1.3", "filestoreFiles": 301}
    )
    started = {"startedAt": cond.now_rfc3339()}
    failure = Failure("TARGET:INVALID", "Invalid value", code="c", value="5.0", expected=["18.0"])
    return {
        "phase": cond.SUCCEEDED,
        "observedGeneration": 2,
        "requestId": 10534,
        "createAttemptedAt": cond.now_rfc3339(),
        "processRequestedAt": cond.now_rfc3339(),
        "moverRetries": 1,
        "requestSecretRef": {"name": "acme-request"},
        "progress": "42% (1.0 MiB/2.0 MiB)",
        "message": "m",
        "platform": platform_status(public_status(request), cond.now_rfc3339()),
        "upload": upload,
        "download": download,
        "preflight": {**preflight_status(checked), **started},
        "dump": {**dumped_status(dumped), **started},
        "restore": {**restored_status(restored), **started},
        "failures": [failure.to_json()],
        "conditions": conditions,
    }


def a_full_upgrade_request_status() -> dict[str, Any]:
    """The fields only an upgrade-request resource gets, built by the controller's code."""
    answer = RequestStatus.from_result(
        {"status": "failed", "host_uri": "upgrade-p1.odoo.com", "reason": "r", "archived": True}
    )
    platform = platform_status(
        upgrade_request.public_status(answer, "upgrade-p1.odoo.com"), cond.now_rfc3339()
    )
    result = MoverResult.from_json(
        {"bytes": 3, "sha256": "ab", "attempts": 1, "transport": "rsync", "files": 4,
         "dumpPath": "upgraded.dump", "reportPath": "upgrade-report.html"}
    )  # fmt: skip
    return {
        "platform": {**platform, "pgVersionCompatible": False, "logOffset": 1234},
        "upload": uploaded_status(result, "rsync"),
        "download": {**downloaded_set_status(result, "upgraded/acme"), "startedAt": "x"},
    }


def undeclared(value: Any, node: dict[str, Any], path: str) -> Iterator[str]:
    if isinstance(value, dict):
        props = node.get("properties") or {}
        for name, child in value.items():
            if name not in props:
                yield f"{path}.{name}"
            else:
                yield from undeclared(child, props[name], f"{path}.{name}")
    elif isinstance(value, list):
        for item in value:
            yield from undeclared(item, node.get("items") or {}, f"{path}[]")


def test_every_status_field_the_controller_writes_is_declared(crd: dict[str, Any]) -> None:
    status_schema = schema(crd)["properties"]["status"]
    status = a_full_status()
    assert list(undeclared(status, status_schema, "status")) == []
    assert set(status) == set(status_schema["properties"])
    assert list(undeclared(a_full_upgrade_request_status(), status_schema, "status")) == []


def test_status_never_holds_the_key_or_a_url() -> None:
    text = repr(a_full_status())
    assert "Aw7pItGVKFuZ_FOR3U8VFQ==" not in text
    assert "http" not in text


def test_phases_and_condition_status_enums_match_the_controller(crd: dict[str, Any]) -> None:
    status = schema(crd)["properties"]["status"]["properties"]
    assert tuple(status["phase"]["enum"]) == cond.PHASES
    assert status["conditions"]["x-kubernetes-list-map-keys"] == ["type"]
