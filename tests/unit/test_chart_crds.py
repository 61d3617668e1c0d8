"""The chart ships the very CRD of crds/: Helm installs charts/*/crds/ verbatim, so a drift would
install a different schema than `kubectl apply -k deploy/default` does."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TOP_CRDS = REPO / "crds"
CHART_CRDS = REPO / "charts" / "odoo-upgrade-operator" / "crds"


def crd_files(directory: Path) -> dict[str, bytes]:
    """CRD manifests of a directory by file name (kustomization.yaml is not a CRD)."""
    return {
        path.name: path.read_bytes()
        for path in sorted(directory.glob("*.yaml"))
        if path.name != "kustomization.yaml"
    }


def test_chart_crds_are_byte_equal_to_the_top_level_crds() -> None:
    top, chart = crd_files(TOP_CRDS), crd_files(CHART_CRDS)
    assert top, "crds/ holds no CRD"
    assert sorted(chart) == sorted(top), "fix: cp crds/*.yaml charts/odoo-upgrade-operator/crds/"
    for name, content in top.items():
        assert chart[name] == content, (
            f"charts/odoo-upgrade-operator/crds/{name} differs from crds/{name}; "
            "fix: cp crds/*.yaml charts/odoo-upgrade-operator/crds/ (minus kustomization.yaml)"
        )


def test_kustomize_lists_every_top_level_crd() -> None:
    kustomization = (TOP_CRDS / "kustomization.yaml").read_text()
    for name in crd_files(TOP_CRDS):
        assert f"- {name}" in kustomization, f"crds/kustomization.yaml does not list {name}"


def test_chart_crds_holds_only_crds() -> None:
    # Helm applies every file of crds/ as a resource: a Kustomization there would break installs.
    names = {path.name for path in CHART_CRDS.iterdir()}
    assert names == set(crd_files(CHART_CRDS))
