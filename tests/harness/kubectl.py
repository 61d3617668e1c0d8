"""`kubectl` as tests run it: the `.venv/bin/kubectl` wheel, output captured as text."""

from __future__ import annotations

import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from tests.harness.cluster import REPO_ROOT

KUBECTL = REPO_ROOT / ".venv" / "bin" / "kubectl"


def kubectl(
    *args: str,
    kubeconfig: Path | None = None,
    input: str | None = None,
    check: bool = True,
    timeout: float = 60.0,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``kubectl [--kubeconfig K] ARGS``; with ``check`` a non-zero exit raises
    AssertionError carrying kubectl's stderr."""
    config = ["--kubeconfig", str(kubeconfig)] if kubeconfig else []
    result = subprocess.run(
        [str(KUBECTL), *config, *args],
        input=input,
        capture_output=True,
        text=True,
        env=None if env is None else dict(env),
        timeout=timeout,
        check=False,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"kubectl {' '.join(args)} exited {result.returncode}: {result.stderr.strip()}"
        )
    return result


def kustomize(directory: Path) -> list[dict[str, Any]]:
    """The manifests ``kubectl kustomize DIRECTORY`` renders (kubectl's own kustomize)."""
    rendered = kubectl("kustomize", str(directory), timeout=120).stdout
    return [doc for doc in yaml.safe_load_all(rendered) if doc]
