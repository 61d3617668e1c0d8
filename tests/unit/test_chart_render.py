"""What `helm template` renders from charts/odoo-upgrade-operator, with a real `helm` built from
the Go module proxy (scripts/build-helm.sh, cached), compared with what deploy/default installs."""

from __future__ import annotations

import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.harness.kubectl import kustomize

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "odoo-upgrade-operator"
RELEASE_NAMESPACE = "odoo-upgrade-system"

Manifest = dict[str, Any]
Rule = tuple[str, str, str]


@pytest.fixture(scope="module")
def helm() -> Path:
    """The helm binary, built once and cached by scripts/build-helm.sh (prints its path)."""
    done = subprocess.run(
        ["bash", str(REPO / "scripts" / "build-helm.sh")],
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    assert done.returncode == 0, f"scripts/build-helm.sh failed:\n{done.stderr[-3000:]}"
    return Path(done.stdout.strip().splitlines()[-1])


def render(helm: Path, *values: str) -> list[Manifest]:
    """`helm template` with `--set` values; the rendered manifests."""
    args = [str(helm), "template", "odoo-upgrade-operator", str(CHART), "-n", RELEASE_NAMESPACE]
    for value in values:
        args += ["--set", value]
    done = subprocess.run(args, capture_output=True, text=True, timeout=120, check=True)
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def render_error(helm: Path, *values: str) -> str:
    """stderr of a `helm template` that must fail."""
    args = [str(helm), "template", str(CHART)]
    for value in values:
        args += ["--set", value]
    done = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode != 0, f"helm template {values} succeeded"
    return done.stderr


def of_kind(manifests: Iterable[Manifest], kind: str) -> list[Manifest]:
    return [m for m in manifests if m["kind"] == kind]


def the_deployment(manifests: list[Manifest]) -> Manifest:
    (deployment,) = of_kind(manifests, "Deployment")
    return deployment


def operator_container(manifests: list[Manifest]) -> Manifest:
    (container,) = the_deployment(manifests)["spec"]["template"]["spec"]["containers"]
    return container


def env_value(container: Manifest, name: str) -> Any:
    return next(e for e in container["env"] if e["name"] == name)


def rules_of(role: Manifest) -> set[Rule]:
    """A role's rules flattened to (apiGroup, resource, verb) triples."""
    return {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def operator_rules(manifests: list[Manifest]) -> set[Rule]:
    """What the operator's ServiceAccount is granted: roles bound to it, not aggregated ones."""
    bound = {
        (binding["roleRef"]["kind"], binding["roleRef"]["name"])
        for binding in of_kind(manifests, "ClusterRoleBinding") + of_kind(manifests, "RoleBinding")
    }
    return {
        triple
        for role in of_kind(manifests, "ClusterRole") + of_kind(manifests, "Role")
        if (role["kind"], role["metadata"]["name"]) in bound
        for triple in rules_of(role)
    }


def named_rules(role: Manifest) -> set[tuple[str, str, str, tuple[str, ...]]]:
    """A role's rules as (apiGroup, resource, verb, resourceNames) tuples."""
    return {
        (group, resource, verb, tuple(rule.get("resourceNames") or ()))
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def lease_role(manifests: list[Manifest]) -> Manifest:
    (role,) = [
        r
        for r in of_kind(manifests, "Role")
        if any("coordination.k8s.io" in rule["apiGroups"] for rule in r["rules"])
    ]
    return role


def flags(container: Manifest, flag: str) -> list[str]:
    """Values of `--flag=value` arguments, in order."""
    return [a.split("=", 1)[1] for a in container["args"] if a.startswith(flag + "=")]


def folded(value: Any) -> Any:
    """`value` with every run of whitespace in its strings made one space."""
    if isinstance(value, dict):
        return {k: folded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [folded(v) for v in value]
    return " ".join(value.split()) if isinstance(value, str) else value


def aggregated_rules(manifests: list[Manifest], label: str) -> set[Rule]:
    return {
        triple
        for role in of_kind(manifests, "ClusterRole")
        if role["metadata"].get("labels", {}).get(f"rbac.authorization.k8s.io/{label}") == "true"
        for triple in rules_of(role)
    }


def test_helm_lint_passes_strict(helm: Path) -> None:
    done = subprocess.run(
        [str(helm), "lint", "--strict", str(CHART)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_default_chart_grants_the_same_rbac_as_deploy_default(helm: Path) -> None:
    chart, kustomized = render(helm), kustomize(REPO / "deploy" / "default")
    assert operator_rules(chart) == operator_rules(kustomized)
    for label in ("aggregate-to-edit", "aggregate-to-admin", "aggregate-to-view"):
        assert aggregated_rules(chart, label) == aggregated_rules(kustomized, label)


def test_default_chart_runs_the_operator_as_deploy_default_does(helm: Path) -> None:
    chart, kustomized = render(helm), kustomize(REPO / "deploy" / "default")
    for key in ("replicas", "strategy"):
        assert the_deployment(chart)["spec"][key] == the_deployment(kustomized)["spec"][key]
    pod_spec = the_deployment(chart)["spec"]["template"]["spec"]
    kustomized_pod_spec = the_deployment(kustomized)["spec"]["template"]["spec"]
    for key in ("securityContext", "volumes"):
        assert pod_spec[key] == kustomized_pod_spec[key]
    ours, theirs = operator_container(chart), operator_container(kustomized)
    for key in ("image", "args", "env", "ports", "livenessProbe", "resources", "securityContext"):
        assert ours[key] == theirs[key], key


def test_operator_pod_meets_the_restricted_security_profile(helm: Path) -> None:
    deployment = the_deployment(render(helm))
    pod = deployment["spec"]["template"]["spec"]
    container = operator_container([deployment])
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}


def test_two_replicas_elect_a_leader_and_roll_over_without_a_gap(helm: Path) -> None:
    manifests = render(helm)
    deployment = the_deployment(manifests)
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }
    container = operator_container(manifests)
    assert "--leader-elect" in container["args"]
    for name, field in (("POD_NAME", "metadata.name"), ("POD_NAMESPACE", "metadata.namespace")):
        assert env_value(container, name)["valueFrom"] == {"fieldRef": {"fieldPath": field}}
    anti = deployment["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
    (term,) = anti["preferredDuringSchedulingIgnoredDuringExecution"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert term["podAffinityTerm"]["labelSelector"]["matchLabels"].items() <= labels.items()


def test_one_replica_without_leader_election_is_recreated_not_rolled(helm: Path) -> None:
    manifests = render(helm, "replicaCount=1", "leaderElection.enabled=false")
    deployment = the_deployment(manifests)
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert "--leader-elect" not in operator_container(manifests)["args"]
    assert not of_kind(manifests, "Role") and not of_kind(manifests, "PodDisruptionBudget")
    assert "affinity" not in deployment["spec"]["template"]["spec"]


def test_several_replicas_without_leader_election_are_refused(helm: Path) -> None:
    error = render_error(helm, "replicaCount=3", "leaderElection.enabled=false")
    assert "leaderElection.enabled" in error


def test_the_lease_role_is_in_the_release_namespace_and_names_the_lease(helm: Path) -> None:
    manifests = render(helm, "watchNamespaces={team-a}")
    role = lease_role(manifests)
    assert role["metadata"]["namespace"] == RELEASE_NAMESPACE
    assert named_rules(role) == {
        ("coordination.k8s.io", "leases", "create", ()),
        ("coordination.k8s.io", "leases", "get", ("odoo-upgrade-operator",)),
        ("coordination.k8s.io", "leases", "update", ("odoo-upgrade-operator",)),
    }
    (binding,) = [
        b
        for b in of_kind(manifests, "RoleBinding")
        if b["roleRef"]["name"] == role["metadata"]["name"]
    ]
    assert binding["metadata"]["namespace"] == RELEASE_NAMESPACE
    assert binding["roleRef"]["kind"] == "Role"
    # Nowhere else, and never cluster-wide.
    lease_rules = {r for r in operator_rules(manifests) if r[0] == "coordination.k8s.io"}
    cluster_bound = {b["roleRef"]["name"] for b in of_kind(manifests, "ClusterRoleBinding")}
    assert lease_rules and not any(
        r[0] == "coordination.k8s.io"
        for role in of_kind(manifests, "ClusterRole")
        if role["metadata"]["name"] in cluster_bound
        for r in rules_of(role)
    )


def test_the_disruption_budget_keeps_one_operator_running(helm: Path) -> None:
    manifests = render(helm)
    (budget,) = of_kind(manifests, "PodDisruptionBudget")
    assert budget["spec"]["minAvailable"] == 1
    labels = the_deployment(manifests)["spec"]["template"]["metadata"]["labels"]
    assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert not of_kind(render(helm, "podDisruptionBudget.enabled=false"), "PodDisruptionBudget")


def test_allowed_platform_urls_become_repeated_flags(helm: Path) -> None:
    assert flags(operator_container(render(helm)), "--allowed-platform-url") == [
        "https://upgrade.odoo.com"
    ]
    container = operator_container(
        render(helm, "allowedPlatformUrls={https://upgrade.odoo.com,https://proxy.example/odoo}")
    )
    assert flags(container, "--allowed-platform-url") == [
        "https://upgrade.odoo.com",
        "https://proxy.example/odoo",
    ]


def test_mover_values_become_operator_flags(helm: Path) -> None:
    defaults = operator_container(render(helm))["args"]
    assert not [a for a in defaults if a.startswith(("--mover-", "--max-mover", "--database"))]
    container = operator_container(
        render(
            helm,
            "mover.maxRetries=0",
            "mover.activeDeadlineSeconds=7200",
            "mover.resources.requests.cpu=100m",
            "mover.resources.requests.memory=128Mi",
            "mover.resources.limits.cpu=2",
            "mover.resources.limits.memory=1Gi",
            "databaseImage=registry.example/odoo-pg:16",
        )
    )
    assert container["args"][-7:] == [
        "--max-mover-retries=0",
        "--mover-active-deadline-seconds=7200",
        "--mover-cpu-request=100m",
        "--mover-memory-request=128Mi",
        "--mover-cpu-limit=2",
        "--mover-memory-limit=1Gi",
        "--database-image=registry.example/odoo-pg:16",
    ]


def by_name(manifests: list[Manifest], kind: str, suffix: str) -> Manifest:
    (found,) = [m for m in of_kind(manifests, kind) if m["metadata"]["name"].endswith(suffix)]
    return found


def test_mover_job_policies_confine_the_operators_account_and_read_its_deployment(
    helm: Path,
) -> None:
    manifests = render(helm)
    account = the_deployment(manifests)["spec"]["template"]["spec"]["serviceAccountName"]
    for suffix in ("-mover-jobs", "-mover-image"):
        policy = by_name(manifests, "ValidatingAdmissionPolicy", suffix)
        binding = by_name(manifests, "ValidatingAdmissionPolicyBinding", suffix)
        assert binding["spec"]["policyName"] == policy["metadata"]["name"]
        assert binding["spec"]["validationActions"] == ["Deny"]
        (condition,) = policy["spec"]["matchConditions"]
        assert f"'system:serviceaccount:{RELEASE_NAMESPACE}:{account}'" in condition["expression"]
    # The shape needs no parameter; the image comes from this release's Deployment, whose
    # absence must not refuse every Job of the cluster.
    assert (
        "paramRef"
        not in by_name(manifests, "ValidatingAdmissionPolicyBinding", "-mover-jobs")["spec"]
    )
    image = by_name(manifests, "ValidatingAdmissionPolicy", "-mover-image")
    assert image["spec"]["paramKind"] == {"apiVersion": "apps/v1", "kind": "Deployment"}
    assert by_name(manifests, "ValidatingAdmissionPolicyBinding", "-mover-image")["spec"][
        "paramRef"
    ] == {
        "name": the_deployment(manifests)["metadata"]["name"],
        "namespace": RELEASE_NAMESPACE,
        "parameterNotFoundAction": "Allow",
    }
    assert not of_kind(render(helm, "moverJobPolicy.enabled=false"), "ValidatingAdmissionPolicy")


def test_chart_and_deploy_default_carry_the_same_mover_job_policies(helm: Path) -> None:
    chart, kustomized = render(helm), kustomize(REPO / "deploy" / "default")
    for suffix in ("-mover-jobs", "-mover-image"):
        ours = folded(by_name(chart, "ValidatingAdmissionPolicy", suffix)["spec"])
        theirs = folded(by_name(kustomized, "ValidatingAdmissionPolicy", suffix)["spec"])
        # Only who the operator is may differ (release name and namespace).
        assert ours.pop("matchConditions")[0]["name"] == theirs.pop("matchConditions")[0]["name"]
        assert ours == theirs, suffix


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (("image.tag=1.2.3",), "ghcr.io/odoo-upgrade-operator/odoo-upgrade-operator:1.2.3"),
        (
            ("image.repository=registry.example/odoo", "image.digest=sha256:" + "a" * 64),
            "registry.example/odoo@sha256:" + "a" * 64,
        ),
    ],
)
def test_mover_jobs_run_the_operators_image(
    helm: Path, values: tuple[str, ...], expected: str
) -> None:
    container = operator_container(render(helm, *values))
    assert container["image"] == expected
    assert env_value(container, "ODOO_UPGRADE_MOVER_IMAGE")["value"] == expected


def test_watched_namespaces_get_rolebindings_instead_of_cluster_wide_access(helm: Path) -> None:
    manifests = render(helm, "watchNamespaces={team-a,team-b}")
    args = operator_container(manifests)["args"]
    assert "--namespace=team-a" in args and "--namespace=team-b" in args
    assert "--all-namespaces" not in args
    # (The Lease's RoleBinding, to a Role in the release namespace, is another matter.)
    role_bindings = [b for b in of_kind(manifests, "RoleBinding") if b["roleRef"]["kind"] != "Role"]
    assert sorted(b["metadata"]["namespace"] for b in role_bindings) == ["team-a", "team-b"]
    namespaced_role = {b["roleRef"]["name"] for b in role_bindings}
    cluster_bound = {b["roleRef"]["name"] for b in of_kind(manifests, "ClusterRoleBinding")}
    assert not namespaced_role & cluster_bound, "namespaced rules must not be granted cluster-wide"
    # kopf matches the --namespace patterns against the namespaces that exist.
    assert ("", "namespaces", "list") in operator_rules(manifests)
    assert ("", "secrets", "get") in operator_rules(manifests)


def test_all_namespaces_mode_grants_no_namespace_listing(helm: Path) -> None:
    assert not {r for r in operator_rules(render(helm)) if r[1] == "namespaces"}


def test_rbac_and_service_account_can_be_left_to_the_user(helm: Path) -> None:
    manifests = render(
        helm, "rbac.create=false", "serviceAccount.create=false", "serviceAccount.name=my-operator"
    )
    kinds = {m["kind"] for m in manifests}
    assert not kinds & {"ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}
    assert "ServiceAccount" not in kinds
    pod = the_deployment(manifests)["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "my-operator"


def test_existing_service_account_needs_a_name(helm: Path) -> None:
    assert "serviceAccount.name" in render_error(helm, "serviceAccount.create=false")


def test_service_monitor_only_when_asked(helm: Path) -> None:
    assert not of_kind(render(helm), "ServiceMonitor")
    (monitor,) = of_kind(render(helm, "metrics.serviceMonitor.enabled=true"), "ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"


def test_metrics_off_removes_port_service_and_flag(helm: Path) -> None:
    manifests = render(helm, "metrics.enabled=false", "metrics.serviceMonitor.enabled=true")
    container = operator_container(manifests)
    assert [a for a in container["args"] if a.startswith("--metrics-port")] == ["--metrics-port=0"]
    assert not [p for p in container["ports"] if p["name"] == "metrics"]
    assert not of_kind(manifests, "Service") and not of_kind(manifests, "ServiceMonitor")


@pytest.mark.parametrize(
    ("value", "named"),
    [
        ("watchNamespaces={Not_A_Namespace}", "watchNamespaces"),
        ("image.pullPolicy=Sometimes", "pullPolicy"),
        ("metrics.port=70000", "port"),
        ("metricz.enabled=true", "metricz"),
        ("allowedPlatformUrls={ftp://upgrade.odoo.com}", "allowedPlatformUrls"),
        ("mover.resources.limits.cpu=lots", "cpu"),
        ("mover.maxRetries=-1", "maxRetries"),
    ],
)
def test_values_schema_rejects_bad_values_naming_the_field(
    helm: Path, value: str, named: str
) -> None:
    assert named in render_error(helm, value)
