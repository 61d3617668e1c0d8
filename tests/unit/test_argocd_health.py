"""The Argo CD health check of OdooUpgrade, run by a real Lua interpreter over its testdata.

Argo CD runs health.lua with gopher-lua (Lua 5.1 semantics); the tests run it under Lua 5.1
and Lua 5.4, so the script relies on nothing one of them lacks. health_test.yaml is Argo CD's
own test format: the answers it names are the answers the script must give.
"""

from __future__ import annotations

import copy
import importlib
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHECK_DIR = REPO / "deploy/argocd/resource_customizations/upgrade.odoo-operator.io/OdooUpgrade"
HEALTH_LUA = CHECK_DIR / "health.lua"
HEALTH_TEST = CHECK_DIR / "health_test.yaml"
ARGOCD_CM = REPO / "deploy/argocd/argocd-cm.yaml"
CM_KEY = "resource.customizations.health.upgrade.odoo-operator.io_OdooUpgrade"
ARGO_STATUSES = {"Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"}
LUA_VERSIONS = ["lua51", "lua54"]


def lua_module(version: str) -> ModuleType:
    """The lupa binding of one Lua version."""
    return importlib.import_module(f"lupa.{version}")


def evaluate_health(obj: dict[str, Any], version: str = "lua54") -> dict[str, Any]:
    """Run health.lua as Argo CD does: `obj` is a global, the script's chunk returns a table."""
    runtime = lua_module(version).LuaRuntime(unpack_returned_tuples=True)

    def to_lua(value: Any) -> Any:
        if isinstance(value, dict):
            return runtime.table_from({key: to_lua(item) for key, item in value.items()})
        if isinstance(value, list):
            return runtime.table_from([to_lua(item) for item in value])
        return value

    runtime.globals().obj = to_lua(obj)
    chunk = runtime.execute("return function() " + HEALTH_LUA.read_text() + "\nend")
    answer = chunk()
    return {"status": answer["status"], "message": answer["message"]}


def health_tests() -> list[dict[str, Any]]:
    tests: list[dict[str, Any]] = yaml.safe_load(HEALTH_TEST.read_text())["tests"]
    return tests


def load_testdata(name: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((CHECK_DIR / "testdata" / name).read_text())
    return data


@pytest.mark.parametrize("version", LUA_VERSIONS)
@pytest.mark.parametrize("case", health_tests(), ids=lambda case: Path(case["inputPath"]).stem)
def test_health_matches_health_test_yaml(case: dict[str, Any], version: str) -> None:
    obj = yaml.safe_load((CHECK_DIR / case["inputPath"]).read_text())
    assert evaluate_health(obj, version) == case["healthStatus"]


def test_every_testdata_manifest_is_named_in_health_test_yaml() -> None:
    named = {Path(case["inputPath"]).name for case in health_tests()}
    on_disk = {path.name for path in (CHECK_DIR / "testdata").glob("*.yaml")}
    assert named == on_disk


def test_health_test_yaml_covers_every_outcome() -> None:
    statuses = {case["healthStatus"]["status"] for case in health_tests()}
    assert statuses == {"Healthy", "Progressing", "Degraded"}
    assert statuses <= ARGO_STATUSES


def test_succeeded_upgrade_is_healthy() -> None:
    assert evaluate_health(load_testdata("succeeded.yaml"))["status"] == "Healthy"


def test_failed_upgrade_is_degraded_with_the_ready_condition_message() -> None:
    obj = load_testdata("failed_invalid.yaml")
    ready = next(c for c in obj["status"]["conditions"] if c["type"] == "Ready")
    assert evaluate_health(obj) == {"status": "Degraded", "message": ready["message"]}


def test_failed_upgrade_without_conditions_names_the_platform_failure() -> None:
    health = evaluate_health(load_testdata("failed_platform_failure.yaml"))
    assert health["status"] == "Degraded"
    assert "TARGET:INVALID" in health["message"]


@pytest.mark.parametrize("name", ["succeeded.yaml", "failed_invalid.yaml"])
def test_a_final_phase_is_progressing_while_the_operator_lags_the_spec(name: str) -> None:
    obj = copy.deepcopy(load_testdata(name))
    obj["metadata"]["generation"] = obj["status"]["observedGeneration"] + 1
    assert evaluate_health(obj)["status"] == "Progressing"


@pytest.mark.parametrize("phase", ["Pending", "Creating", "Uploading", "Processing", "Downloading"])
def test_every_phase_in_flight_is_progressing(phase: str) -> None:
    obj = load_testdata("processing.yaml")
    obj["status"]["phase"] = phase
    health = evaluate_health(obj)
    assert health["status"] == "Progressing"
    assert health["message"].startswith(phase)


def test_argocd_cm_snippet_carries_health_lua_verbatim() -> None:
    config_map = yaml.safe_load(ARGOCD_CM.read_text())
    assert config_map["metadata"]["name"] == "argocd-cm"
    assert config_map["data"][CM_KEY] == HEALTH_LUA.read_text()


def test_example_applications_sync_paths_of_this_repository() -> None:
    applications = list(yaml.safe_load_all((REPO / "deploy/argocd/application.yaml").read_text()))
    assert applications
    for application in applications:
        assert application["kind"] == "Application"
        path = REPO / application["spec"]["source"]["path"]
        assert (path / "kustomization.yaml").is_file(), f"{path} is not a kustomization"
