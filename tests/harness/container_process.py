"""How the pod runner turns a pod's container into a local process.

- **Command**: ``command + args`` (``$(VAR)`` expanded as Kubernetes does). The first word is
  looked up by its base name in the project's venv ``bin/`` first, so ``odoo-upgrade`` and
  ``python`` are the project's. A container without ``command`` cannot run (no image here).
- **Environment**: ``envFrom`` (Secrets, ConfigMaps), then ``env`` (literal, ``secretKeyRef``,
  ``configMapKeyRef``, downward-API ``fieldRef``), plus ``PATH`` (venv first), ``HOME``,
  ``HOSTNAME`` and ``LANG``. Nothing else leaks from the runner's environment.
- **Volumes**: PVC ``<ns>/<claim>`` is ``<state>/volumes/<ns>/<claim>/`` (created on first use,
  ``subPath`` honoured); Secret, ConfigMap, downward-API and projected volumes are files in a
  per-pod directory; emptyDir is a per-pod directory; hostPath is the path itself.
- **Mount paths**: every mountPath (and the terminationMessagePath, default
  ``/dev/termination-log``) that appears as a path prefix in args, env values or workingDir is
  rewritten to its local directory. Paths the program builds at run time are not rewritten.
- **Read-only mounts**: the process runs as the runner's own user (``runAsUser`` is ignored).
  A ``readOnly`` PVC mount, and every Secret/ConfigMap/downward-API/projected volume, is
  enforced one of two ways, chosen once by :func:`read_only_strategy`:
  ``bind`` (the runner is root with CAP_SYS_ADMIN, as on the project's dev machine): the
  command runs under ``unshare --mount`` and sees a read-only bind mount of the live volume at
  a per-pod path, so writes fail with EROFS even for root; ``copy`` (otherwise): the process sees
  a copy of the volume taken at start, with the write bits removed, so writes fail with EACCES
  for a non-root runner (its owner could chmod the copy back: honest for well-behaved programs
  only), and nothing written there ever reaches the volume. A root runner without
  CAP_SYS_ADMIN gets ``copy``, which root can write: the read-only e2e test then fails.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

JsonObject = dict[str, Any]
DEFAULT_TERMINATION_MESSAGE_PATH = "/dev/termination-log"
POD_IP = "127.0.0.1"

# Fetches a Secret or ConfigMap (kind, namespace, name) -> object, or None if it does not exist.
ObjectFetcher = Callable[[str, str, str], Awaitable[JsonObject | None]]
# Requests a service-account token (namespace, serviceaccount, audience, seconds) -> token.
TokenRequester = Callable[[str, str, str | None, int], Awaitable[str]]


class ContainerConfigError(Exception):
    """The container cannot be set up yet (missing Secret, key...): the pod stays Pending."""


class ContainerStartError(Exception):
    """The container can never start here (no command, unsupported volume): the pod fails."""


READ_ONLY_BIND_SCRIPT = (
    # Arguments: <source> <target> pairs, then "--", then the command.
    'set -e; while [ "$1" != "--" ]; do mount --bind "$1" "$2"; '
    'mount -o remount,bind,ro "$2"; shift 2; done; shift; exec "$@"'
)


def read_only_strategy() -> str:
    """``bind`` when read-only bind mounts in a private mount namespace work here, else ``copy``.

    ``ODOO_UPGRADE_PODRUNNER_READ_ONLY=copy|bind`` forces one (to try the other path).
    """
    forced = os.environ.get("ODOO_UPGRADE_PODRUNNER_READ_ONLY")
    if forced in ("copy", "bind"):
        return forced
    if os.geteuid() != 0 or not shutil.which("unshare"):
        return "copy"
    scratch = tempfile.gettempdir()
    probe = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "mount", "--bind", scratch, scratch],
        capture_output=True,
        check=False,
    )
    return "bind" if probe.returncode == 0 else "copy"


@dataclass
class LocalContainer:
    """Everything needed to start one container as a local process."""

    name: str
    argv: list[str]
    env: dict[str, str]
    cwd: Path
    termination_log: Path
    termination_policy: str


@dataclass
class PodWorkspace:
    """Per-pod directories: secret files, emptyDirs, read-only copies, termination logs."""

    root: Path
    volumes: dict[str, Path] = field(default_factory=dict)

    def subdir(self, *parts: str, mode: int = 0o755) -> Path:
        path = self.root.joinpath(*parts)
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(mode)
        return path


def _read_only_copy(source: Path, destination: Path) -> Path:
    """Copy ``source`` (file or directory) to ``destination`` and make the copy non-writable."""
    if source.is_dir():
        shutil.copytree(source, destination, symlinks=True)
        for directory, _dirs, files in os.walk(destination, topdown=False):
            for name in files:
                file = Path(directory, name)
                if not file.is_symlink():
                    file.chmod(file.stat().st_mode & 0o555)
            Path(directory).chmod(0o555)
    else:
        shutil.copy2(source, destination)
        destination.chmod(destination.stat().st_mode & 0o555)
    return destination


def _write_files(directory: Path, files: Mapping[str, bytes], modes: Mapping[str, int]) -> None:
    """Write projected files, readable, with no write bits (mounted read-only besides)."""
    for relative, data in files.items():
        target = directory / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        target.chmod((modes.get(relative, 0o644) & 0o555) | 0o400)
    for sub in [directory, *[p for p in directory.rglob("*") if p.is_dir()]]:
        sub.chmod(0o555)


def _key_files(
    data: Mapping[str, bytes], source: JsonObject, *, what: str
) -> tuple[dict[str, bytes], dict[str, int]]:
    """Apply ``items`` / ``defaultMode`` of a secret/configMap volume source."""
    default_mode = int(source.get("defaultMode", 0o644))
    items = source.get("items")
    if not items:
        return dict(data), dict.fromkeys(data, default_mode)
    files: dict[str, bytes] = {}
    modes: dict[str, int] = {}
    for item in items:
        if item["key"] not in data:
            raise ContainerConfigError(f"{what} has no key {item['key']!r}")
        files[item["path"]] = data[item["key"]]
        modes[item["path"]] = item.get("mode", default_mode)
    return files, modes


async def _object_data(
    fetch: ObjectFetcher, kind: str, namespace: str, name: str, optional: bool
) -> dict[str, bytes] | None:
    obj = await fetch(kind, namespace, name)
    if obj is None:
        if optional:
            return None
        raise ContainerConfigError(f'{kind.lower()} "{name}" not found')
    if kind == "Secret":
        return {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}
    data = {k: v.encode() for k, v in (obj.get("data") or {}).items()}
    data.update({k: base64.b64decode(v) for k, v in (obj.get("binaryData") or {}).items()})
    return data


def field_value(pod: JsonObject, field_path: str) -> str:
    """Resolve a downward-API ``fieldRef.fieldPath`` against the pod."""
    metadata = pod["metadata"]
    simple = {
        "metadata.name": metadata.get("name"),
        "metadata.namespace": metadata.get("namespace"),
        "metadata.uid": metadata.get("uid"),
        "spec.nodeName": pod["spec"].get("nodeName"),
        "spec.serviceAccountName": pod["spec"].get("serviceAccountName"),
        "status.podIP": POD_IP,
        "status.podIPs": POD_IP,
        "status.hostIP": POD_IP,
        "status.hostIPs": POD_IP,
    }
    if field_path in simple:
        return str(simple[field_path] or "")
    match = re.fullmatch(r"metadata\.(labels|annotations)\['([^']*)'\]", field_path)
    if match:
        return str((metadata.get(match.group(1)) or {}).get(match.group(2), ""))
    if field_path in ("metadata.labels", "metadata.annotations"):
        values = metadata.get(field_path.split(".")[1]) or {}
        return "\n".join(f'{k}="{v}"' for k, v in sorted(values.items()))
    raise ContainerStartError(f"unsupported fieldRef.fieldPath {field_path!r}")


_REFERENCE = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes ``$(VAR)`` expansion: known names replaced, ``$$`` escapes, others kept."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return env.get(name, match.group(0))

    return _REFERENCE.sub(replace, text)


def _literal(text: str, _match: re.Match[str]) -> str:
    return text


def rewrite_paths(text: str, mounts: list[tuple[str, str]]) -> str:
    """Replace each mount path used as a path prefix in ``text`` by its local directory.

    A mount path matches at the start of the text or after a non-path character (``=``, ``:``,
    a space...) and must end there or continue with ``/``.
    """
    # One pass over all mounts (longest first): a replaced local path (often under /tmp) must
    # not be rewritten again by a shorter mount such as an emptyDir at /tmp.
    locals_by_path = {
        mount_path.rstrip("/"): local for mount_path, local in mounts if mount_path not in ("", "/")
    }
    if not locals_by_path:
        return text
    alternatives = "|".join(
        re.escape(path) for path in sorted(locals_by_path, key=len, reverse=True)
    )
    pattern = re.compile(r"(?<![\w./-])(" + alternatives + r")(?=/|$|[^\w.-])")
    # A function, not a template: the local path must not be read for backslash escapes.
    return pattern.sub(lambda match: locals_by_path[match.group(1)], text)


def resolve_executable(word: str, venv_bin: Path) -> str:
    """The venv's program of that base name if there is one, else ``word`` unchanged."""
    candidate = venv_bin / os.path.basename(word)
    if word and candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    return word


class PodVolumes:
    """Materialises a pod's volumes as local directories."""

    def __init__(
        self,
        pod: JsonObject,
        workspace: PodWorkspace,
        volumes_root: Path,
        fetch: ObjectFetcher,
        request_token: TokenRequester,
        read_only: str = "copy",
    ) -> None:
        self.pod = pod
        self.read_only = read_only
        self.workspace = workspace
        self.volumes_root = volumes_root
        self.fetch = fetch
        self.request_token = request_token
        self.namespace: str = pod["metadata"]["namespace"]

    def claim_dir(self, claim: str) -> Path:
        """``<volumes>/<ns>/<claim>/``, created on first use."""
        path = self.volumes_root / self.namespace / claim
        path.mkdir(parents=True, exist_ok=True)
        return path

    async def prepare(self) -> None:
        """Create every volume of the pod (files for Secrets etc., directories otherwise)."""
        self.file_volumes: set[str] = set()
        for volume in self.pod["spec"].get("volumes") or []:
            name = volume["name"]
            if "persistentVolumeClaim" in volume:
                self.workspace.volumes[name] = self.claim_dir(
                    volume["persistentVolumeClaim"]["claimName"]
                )
            elif "emptyDir" in volume:
                self.workspace.volumes[name] = self.workspace.subdir("empty", name, mode=0o777)
            elif "hostPath" in volume:
                self.workspace.volumes[name] = Path(volume["hostPath"]["path"])
            else:
                files, modes = await self._projected_files(volume)
                directory = self.workspace.subdir("files", name)
                _write_files(directory, files, modes)
                self.workspace.volumes[name] = directory
                self.file_volumes.add(name)

    async def _projected_files(self, volume: JsonObject) -> tuple[dict[str, bytes], dict[str, int]]:
        if "secret" in volume:
            source = volume["secret"]
            data = await _object_data(
                self.fetch,
                "Secret",
                self.namespace,
                source["secretName"],
                bool(source.get("optional")),
            )
            return _key_files(data or {}, source, what=f'secret "{source["secretName"]}"')
        if "configMap" in volume:
            source = volume["configMap"]
            data = await _object_data(
                self.fetch,
                "ConfigMap",
                self.namespace,
                source["name"],
                bool(source.get("optional")),
            )
            return _key_files(data or {}, source, what=f'configmap "{source["name"]}"')
        if "downwardAPI" in volume:
            return self._downward_files(volume["downwardAPI"])
        if "projected" in volume:
            files: dict[str, bytes] = {}
            modes: dict[str, int] = {}
            default_mode = volume["projected"].get("defaultMode", 0o644)
            for source in volume["projected"].get("sources") or []:
                part, part_modes = await self._projection(source, default_mode)
                files.update(part)
                modes.update(part_modes)
            return files, modes
        kinds = sorted(set(volume) - {"name"})
        raise ContainerStartError(f"volume {volume['name']!r}: unsupported type {kinds}")

    def _downward_files(self, source: JsonObject) -> tuple[dict[str, bytes], dict[str, int]]:
        default_mode = source.get("defaultMode", 0o644)
        files: dict[str, bytes] = {}
        modes: dict[str, int] = {}
        for item in source.get("items") or []:
            if "fieldRef" not in item:
                raise ContainerStartError(f"downwardAPI item {item['path']!r}: only fieldRef")
            files[item["path"]] = field_value(self.pod, item["fieldRef"]["fieldPath"]).encode()
            modes[item["path"]] = item.get("mode", default_mode)
        return files, modes

    async def _projection(
        self, source: JsonObject, default_mode: int
    ) -> tuple[dict[str, bytes], dict[str, int]]:
        if "serviceAccountToken" in source:
            spec = source["serviceAccountToken"]
            token = await self.request_token(
                self.namespace,
                self.pod["spec"].get("serviceAccountName") or "default",
                spec.get("audience"),
                int(spec.get("expirationSeconds", 3600)),
            )
            return {spec["path"]: token.encode()}, {spec["path"]: default_mode}
        if "downwardAPI" in source:
            return self._downward_files({"defaultMode": default_mode, **source["downwardAPI"]})
        for kind, key in (("secret", "Secret"), ("configMap", "ConfigMap")):
            if kind in source:
                inner = {"defaultMode": default_mode, **source[kind]}
                data = await _object_data(
                    self.fetch, key, self.namespace, inner["name"], bool(inner.get("optional"))
                )
                return _key_files(data or {}, inner, what=f'{kind} "{inner["name"]}"')
        raise ContainerStartError(f"unsupported projected source {sorted(source)}")

    def mounts(self, container: JsonObject) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        """(mountPath, local path) pairs for a container, and the (source, target) read-only
        bind mounts the process needs (``bind`` strategy only)."""
        mounts: list[tuple[str, str]] = []
        binds: list[tuple[str, str]] = []
        for index, mount in enumerate(container.get("volumeMounts") or []):
            name = mount["name"]
            base = self.workspace.volumes.get(name)
            if base is None:
                raise ContainerStartError(f"volumeMount {name!r}: no such volume")
            local = base / mount["subPath"] if mount.get("subPath") else base
            is_claim = base.is_relative_to(self.volumes_root)
            if is_claim and mount.get("subPath") and not local.exists():
                local.mkdir(parents=True, exist_ok=True)
            if (mount.get("readOnly") and is_claim) or name in self.file_volumes:
                target = self.workspace.root / "readonly" / container["name"] / f"{index}-{name}"
                target.parent.mkdir(parents=True, exist_ok=True)
                if self.read_only == "bind":
                    if local.is_dir():
                        target.mkdir()
                    else:
                        target.touch()
                    binds.append((str(local), str(target)))
                else:
                    _read_only_copy(local, target)
                local = target
            mounts.append((mount["mountPath"], str(local)))
        return mounts, binds


async def resolve_env(
    pod: JsonObject, container: JsonObject, fetch: ObjectFetcher
) -> dict[str, str]:
    """The container's own environment (envFrom, then env), before path rewriting."""
    namespace = pod["metadata"]["namespace"]
    env: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        prefix = source.get("prefix", "")
        for kind, key in (("secretRef", "Secret"), ("configMapRef", "ConfigMap")):
            if kind in source:
                data = await _object_data(
                    fetch, key, namespace, source[kind]["name"], bool(source[kind].get("optional"))
                )
                env.update({prefix + k: v.decode() for k, v in (data or {}).items()})
    for variable in container.get("env") or []:
        name = variable["name"]
        if "valueFrom" not in variable:
            env[name] = expand(variable.get("value", ""), env)
            continue
        source = variable["valueFrom"]
        if "fieldRef" in source:
            env[name] = field_value(pod, source["fieldRef"]["fieldPath"])
            continue
        for kind, key in (("secretKeyRef", "Secret"), ("configMapKeyRef", "ConfigMap")):
            if kind in source:
                ref = source[kind]
                data = await _object_data(
                    fetch, key, namespace, ref["name"], bool(ref.get("optional"))
                )
                if data is None:
                    break
                if ref["key"] not in data:
                    if ref.get("optional"):
                        break
                    raise ContainerConfigError(
                        f"couldn't find key {ref['key']} in {key} {namespace}/{ref['name']}"
                    )
                env[name] = data[ref["key"]].decode()
                break
        else:
            raise ContainerStartError(f"env {name!r}: unsupported valueFrom {sorted(source)}")
    return env


async def local_container(
    pod: JsonObject,
    container: JsonObject,
    volumes: PodVolumes,
    venv_bin: Path,
) -> LocalContainer:
    """Build the local process for ``container`` (volumes must be prepared)."""
    if not container.get("command"):
        raise ContainerStartError(
            f"container {container['name']!r} has no command: the pod runner cannot run an "
            "image's entrypoint"
        )
    mounts, binds = volumes.mounts(container)
    workspace = volumes.workspace
    termination = workspace.subdir("termination") / container["name"]
    termination.write_bytes(b"")
    termination_path = container.get("terminationMessagePath", DEFAULT_TERMINATION_MESSAGE_PATH)
    mounts.append((termination_path, str(termination)))

    own_env = await resolve_env(pod, container, volumes.fetch)
    own_env = {k: rewrite_paths(v, mounts) for k, v in own_env.items()}
    argv = [
        rewrite_paths(expand(word, own_env), mounts)
        for word in [*container["command"], *(container.get("args") or [])]
    ]
    argv[0] = resolve_executable(argv[0], venv_bin)
    if binds:
        wrapper = ["unshare", "--mount", "--propagation", "private", "/bin/sh", "-c"]
        pairs = [path for pair in binds for path in pair]
        argv = [*wrapper, READ_ONLY_BIND_SCRIPT, "sh", *pairs, "--", *argv]
    home = workspace.subdir("home", container["name"])
    env = {
        "PATH": f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
        "HOME": str(home),
        "HOSTNAME": pod["metadata"]["name"],
        "LANG": "C.UTF-8",
        **own_env,
    }
    working_dir = container.get("workingDir")
    cwd = Path(rewrite_paths(working_dir, mounts)) if working_dir else home
    return LocalContainer(
        name=container["name"],
        argv=argv,
        env=env,
        cwd=cwd,
        termination_log=termination,
        termination_policy=container.get("terminationMessagePolicy", "File"),
    )
