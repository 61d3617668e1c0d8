"""pytest fixtures for the operator e2e tests: one operator per test module, one emulator and
fresh namespaces per test.

Test modules load them with `pytest_plugins = ["tests.support.operator_fixtures"]`; the
`cluster` fixture comes from tests/e2e/conftest.py (the control plane harness).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.emulator import RunningEmulator
from tests.support.operator import RunningOperator
from tests.support.platform_ports import take_port
from tests.support.scenario import DEFAULT_PROCESS_SECONDS, REPO_ROOT, Kube, Namespace

CRD = REPO_ROOT / "crds" / "odooupgrades.upgrade.odoo-operator.io.yaml"


def install_crd(kube: Kube) -> None:
    """Apply the CRD from crds/ (idempotent) and wait until the API server serves it."""
    kube.run("apply", "-f", str(CRD))
    kube.run(
        "wait",
        "--for=condition=Established",
        "crd/odooupgrades.upgrade.odoo-operator.io",
        "--timeout=60s",
    )


@pytest.fixture(scope="module")
def kube(cluster: Any) -> Kube:
    return Kube(Path(cluster.kubeconfig))


@pytest.fixture(scope="module")
def operator(
    cluster: Any, kube: Kube, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningOperator]:
    """The operator, watching all namespaces, for the tests of one module."""
    install_crd(kube)
    running = RunningOperator(
        Path(cluster.kubeconfig), tmp_path_factory.mktemp("operator") / "operator.log"
    )
    running.start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def live_operator(operator: RunningOperator) -> RunningOperator:
    """The module's operator, started again if an earlier test killed it."""
    return operator.start()


@pytest.fixture
def start_emulator(tmp_path: Path) -> Iterator[Callable[..., RunningEmulator]]:
    """Start emulators on free ports (`process_seconds`, `latency`, ... as keyword options)."""
    started: list[RunningEmulator] = []

    def start(**options: Any) -> RunningEmulator:
        options.setdefault("process_seconds", DEFAULT_PROCESS_SECONDS)
        # RunningEmulator starts its process in __init__ and waits until both ports answer.
        # On a port the test operators allow (`--allowed-platform-url`).
        emulator = RunningEmulator(
            data_dir=tmp_path / f"emulator-{len(started)}", port=take_port(), **options
        )
        started.append(emulator)
        return emulator

    yield start
    for emulator in started:
        emulator.stop()


@pytest.fixture
def namespaces(
    cluster: Any, kube: Kube, live_operator: RunningOperator
) -> Iterator[Callable[[], Namespace]]:
    """Create fresh namespaces; their wait failures carry the operator's log tail."""
    created: list[Namespace] = []

    def create() -> Namespace:
        namespace = Namespace.create(kube, cluster.volume_dir, diagnostics=live_operator.log_tail)
        created.append(namespace)
        return namespace

    yield create
    for namespace in created:
        namespace.delete()
