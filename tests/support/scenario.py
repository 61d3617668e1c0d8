"""Set up what an `OdooUpgrade` needs in a namespace, apply it, and wait for what it does.

Everything goes through the real kube-apiserver with `kubectl` (the same binary a user runs), and
through the directories the test pod runner maps PVCs to. Nothing here knows how the operator is
built: tests read what a user would read (status, conditions, Events, files on the volume).
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
import subprocess
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.harness.kubectl import kubectl

GROUP = "upgrade.odoo-operator.io"
VERSION = "v1alpha1"
PLURAL = "odooupgrades"
RESOURCE = f"{PLURAL}.{GROUP}"
SAMPLE_CONTRACT = "M123456-abcdef"  # the contract the emulator accepts by default
PHASE_ORDER = ("Pending", "Creating", "Uploading", "Processing", "Downloading", "Succeeded")
CONDITION_ORDER = ("RequestCreated", "Uploaded", "Processed", "Downloaded", "Ready")
UID_LABEL = f"{GROUP}/upgrade-uid"
# Emulator processing time: fast enough for tests, slow enough that a 1 s poll sees it working.
DEFAULT_PROCESS_SECONDS = 2.0

REPO_ROOT = Path(__file__).resolve().parents[2]

# Called on a wait's timeout to add context (operator log tail, Events) to the failure message.
Diagnostics = Callable[[], str]


@dataclass(frozen=True)
class Kube:
    """`kubectl` against one cluster (the harness's kubeconfig)."""

    kubeconfig: Path

    def run(self, *args: str, stdin: str | None = None, check: bool = True) -> str:
        """Run `kubectl ARGS`; return stdout, or raise with stderr when `check` and it fails."""
        return kubectl(*args, kubeconfig=self.kubeconfig, input=stdin, check=check).stdout

    def json(self, *args: str) -> Any:
        """`kubectl ARGS -o json`, parsed."""
        return json.loads(self.run(*args, "-o", "json"))

    def apply(self, *objects: dict[str, Any]) -> None:
        """`kubectl apply` of manifests given as dictionaries (one List, one call)."""
        items = {"apiVersion": "v1", "kind": "List", "items": list(objects)}
        self.run("apply", "-f", "-", stdin=json.dumps(items))

    def exists(self, kind: str, name: str, namespace: str) -> bool:
        """Whether the object is there (as far as this kubeconfig's user may see)."""
        out = self.run("get", kind, name, "-n", namespace, "--ignore-not-found", "-o", "name")
        return bool(out.strip())


def _pg_int(value: int) -> bytes:
    """An integer as pg_dump's archive header stores it: sign byte, then 4 bytes little-endian."""
    return bytes([1 if value < 0 else 0]) + abs(value).to_bytes(4, "little")


def _pg_str(text: str) -> bytes:
    raw = text.encode()
    return _pg_int(len(raw)) + raw


def fake_pg_dump(size: int, seed: str, *, odoo_version: str = "17.0") -> bytes:
    """Deterministic bytes shaped like a pg_dump custom-format archive of an Odoo database.

    A real header (format 1.14, PostgreSQL 16.4, database `acme`) so that the platform guesses
    `pgdmp_custom` / PostgreSQL 16 / the Odoo version, then seeded pseudo-random bytes.
    """
    header = (
        b"PGDMP"
        + bytes([1, 14, 0, 4, 8, 1])  # archive 1.14.0, int size 4, offset size 8, custom format
        + _pg_int(0)  # compression level
        + b"".join(_pg_int(v) for v in (0, 0, 12, 1, 5, 124, 0))  # created 2024-06-01 12:00
        + _pg_str("acme")
        + _pg_str("16.4")  # server version
        + _pg_str("16.4")  # pg_dump version
        + f"\n-- Odoo version {odoo_version}\n".encode()
    )
    body = random.Random(seed).randbytes(max(0, size - len(header)))
    return (header + body)[:size]


def write_file(path: Path, data: bytes) -> None:
    """Write `data` at `path`, creating parent directories (as a user copying a dump would)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def upgrade_manifest(
    namespace: str,
    name: str,
    *,
    platform_url: str,
    source_path: str,
    destination_path: str,
    target: str = "18.0",
    transport: str = "https",
    claim: str = "odoo-backups",
    contract_secret: str = "odoo-contract",  # noqa: S107 - a Secret name, not a secret
    destination_format: str = "archive",
    poll_interval: str = "5s",  # the CRD's floor
    api: str | None = None,
    env: list[str] | None = None,
) -> dict[str, Any]:
    """An `OdooUpgrade` in DESIGN.md §3's shape, pointed at `platform_url` (`api`: the
    platform API, left to its default when None; `env`: upgrade-request env_vars)."""
    platform: dict[str, Any] = {"url": platform_url, "pollInterval": poll_interval}
    if api is not None:
        platform["api"] = api
    if env:
        platform["env"] = list(env)
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "OdooUpgrade",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "target": target,
            "aim": "test",
            "email": "ops@acme.example",
            "contractSecretRef": {"name": contract_secret, "key": "contract"},
            "source": {"claimName": claim, "path": source_path},
            "destination": {
                "claimName": claim,
                "path": destination_path,
                "format": destination_format,
            },
            "transport": transport,
            "platform": platform,
        },
    }


def conditions_of(obj: dict[str, Any]) -> list[dict[str, Any]]:
    return list(obj.get("status", {}).get("conditions") or [])


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any] | None:
    """The condition of `type_` in an object's status, if any."""
    return next((c for c in conditions_of(obj) if c.get("type") == type_), None)


def phase_of(obj: dict[str, Any]) -> str | None:
    phase = obj.get("status", {}).get("phase")
    return str(phase) if phase is not None else None


def describe(obj: dict[str, Any]) -> str:
    """A readable dump of an object's status for failure messages."""
    return json.dumps(obj.get("status", {}), indent=2, sort_keys=True)


@dataclass
class Upgrade:
    """One applied `OdooUpgrade`, and the phases seen while waiting on it."""

    kube: Kube
    namespace: str
    name: str
    diagnostics: Diagnostics | None = None
    phases_seen: list[str] = field(default_factory=list)

    def get(self) -> dict[str, Any]:
        obj: dict[str, Any] = self.kube.json("get", RESOURCE, self.name, "-n", self.namespace)
        phase = phase_of(obj)
        if phase and (not self.phases_seen or self.phases_seen[-1] != phase):
            self.phases_seen.append(phase)
        return obj

    def status(self) -> dict[str, Any]:
        return dict(self.get().get("status", {}))

    def wait_until(
        self,
        satisfied: Callable[[dict[str, Any]], bool],
        what: str,
        *,
        timeout: float = 120.0,
        interval: float = 0.3,
    ) -> dict[str, Any]:
        """Poll the resource until `satisfied(obj)`; on timeout fail with status and context."""
        deadline = time.monotonic() + timeout
        obj = self.get()
        while not satisfied(obj):
            if time.monotonic() > deadline:
                raise AssertionError(self._timeout_message(what, timeout, obj))
            time.sleep(interval)
            obj = self.get()
        return obj

    def wait_for_phase(self, *phases: str, timeout: float = 120.0) -> dict[str, Any]:
        """Wait until `.status.phase` is one of `phases`."""
        return self.wait_until(
            lambda obj: phase_of(obj) in phases, f"phase in {phases}", timeout=timeout
        )

    def wait_for_condition_mentioning(self, text: str, *, timeout: float = 120.0) -> dict[str, Any]:
        """Wait until some condition's message (or reason) mentions `text`."""

        def mentions(obj: dict[str, Any]) -> bool:
            return any(
                text in str(c.get("message", "")) or text in str(c.get("reason", ""))
                for c in conditions_of(obj)
            )

        return self.wait_until(mentions, f"a condition mentioning {text!r}", timeout=timeout)

    def request_secret_name(self) -> str:
        ref = self.status().get("requestSecretRef") or {}
        return str(ref.get("name") or f"{self.name}-request")

    def request_secret(self) -> dict[str, str]:
        """The request Secret's data, decoded (holds the request key)."""
        secret = self.kube.json("get", "secret", self.request_secret_name(), "-n", self.namespace)
        return {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}

    def jobs(self, uid: str) -> list[str]:
        """Names of the mover Jobs labelled with this resource's uid."""
        out = self.kube.run(
            "get", "jobs", "-n", self.namespace, "-l", f"{UID_LABEL}={uid}", "-o", "name"
        )
        return out.split()

    def phases_in_flow_order(self) -> bool:
        """True when the phases seen never went back in the flow (Failed aside)."""
        order = [PHASE_ORDER.index(p) for p in self.phases_seen if p in PHASE_ORDER]
        return order == sorted(order)

    def _timeout_message(self, what: str, timeout: float, obj: dict[str, Any]) -> str:
        parts = [
            f"{self.namespace}/{self.name}: no {what} after {timeout:.0f}s",
            f"phases seen: {self.phases_seen}",
            f"status: {describe(obj)}",
            "events:\n" + events_text(self.kube, self.namespace),
        ]
        if self.diagnostics is not None:
            parts.append(self.diagnostics())
        return "\n".join(parts)


def events_text(kube: Kube, namespace: str) -> str:
    """The namespace's Events, one line each (reason, object, message)."""
    events = kube.json("get", "events", "-n", namespace).get("items", [])
    return "\n".join(
        f"  {e.get('reason')} {e.get('involvedObject', {}).get('name')}: {e.get('message')}"
        for e in events
    )


@dataclass
class Namespace:
    """A namespace of the test cluster and the PVC directories the pod runner maps into it."""

    kube: Kube
    name: str
    volume_dir: Callable[[str, str], Path]
    diagnostics: Diagnostics | None = None

    @classmethod
    def create(
        cls,
        kube: Kube,
        volume_dir: Callable[[str, str], Path],
        *,
        prefix: str = "upg",
        diagnostics: Diagnostics | None = None,
    ) -> Namespace:
        """Create a namespace with a unique name."""
        name = f"{prefix}-{uuid.uuid4().hex[:6]}"
        kube.run("create", "namespace", name)
        # Pods are refused until the namespace's `default` ServiceAccount exists.
        kube.run("wait", "--for=create", "serviceaccount/default", "-n", name, "--timeout=60s")
        return cls(kube, name, volume_dir, diagnostics)

    def delete(self) -> None:
        """Delete the namespace's OdooUpgrades (waiting, so that the running operator releases
        its finalizers now rather than a later test's operator meeting them in a terminating
        namespace), then the namespace without waiting."""
        self.kube.run("delete", RESOURCE, "--all", "-n", self.name, "--timeout=30s", check=False)
        self.kube.run("delete", "namespace", self.name, "--wait=false", "--ignore-not-found")

    def add_contract_secret(
        self, contract: str = SAMPLE_CONTRACT, *, name: str = "odoo-contract"
    ) -> None:
        self.kube.apply(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": name, "namespace": self.name},
                "type": "Opaque",
                "stringData": {"contract": contract},
            }
        )

    def add_pvc(self, claim: str = "odoo-backups") -> Path:
        """Create the PVC object (the operator checks it exists); return its directory."""
        self.kube.apply(
            {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {"name": claim, "namespace": self.name},
                "spec": {
                    "accessModes": ["ReadWriteOnce"],
                    "resources": {"requests": {"storage": "1Gi"}},
                },
            }
        )
        return self.volume(claim)

    def volume(self, claim: str = "odoo-backups") -> Path:
        """The directory the pod runner mounts for PVC `claim` (created if missing)."""
        path = Path(self.volume_dir(self.name, claim))
        path.mkdir(parents=True, exist_ok=True)
        return path

    def put_dump(self, path: str, *, size: int = 256 * 1024, claim: str = "odoo-backups") -> bytes:
        """Write a generated dump at `path` on the PVC; return its bytes."""
        data = fake_pg_dump(size, seed=f"{self.name}/{path}")
        write_file(self.volume(claim) / path, data)
        return data

    def prepare(self, *, contract: str = SAMPLE_CONTRACT, claim: str = "odoo-backups") -> None:
        """Everything an upgrade needs except the dump: the contract Secret and the PVC."""
        self.add_contract_secret(contract)
        self.add_pvc(claim)

    def apply_upgrade(self, name: str, **spec: Any) -> Upgrade:
        """Apply an `OdooUpgrade` (see `upgrade_manifest` for `spec`) and return its handle."""
        self.kube.apply(upgrade_manifest(self.name, name, **spec))
        return Upgrade(self.kube, self.name, name, self.diagnostics)

    def events(self) -> list[dict[str, Any]]:
        return list(self.kube.json("get", "events", "-n", self.name).get("items", []))


def wait_all(
    upgrades: Iterable[Upgrade], *phases: str, timeout: float = 120.0
) -> list[dict[str, Any]]:
    """Wait for several upgrades that run at the same time (one shared deadline)."""
    deadline = time.monotonic() + timeout
    return [
        u.wait_for_phase(*phases, timeout=max(1.0, deadline - time.monotonic())) for u in upgrades
    ]


def assert_delivered(
    obj: dict[str, Any], volume: Path, destination_path: str, upgraded: bytes
) -> None:
    """The destination holds exactly the platform's upgraded dump, its `.sha256` beside it, and
    `.status.download` says so."""
    destination = volume / destination_path
    assert destination.exists(), f"{destination_path} not written; status: {describe(obj)}"
    written = destination.read_bytes()
    assert len(written) == len(upgraded), "upgraded dump size differs from the platform's"
    assert written == upgraded, "upgraded dump differs from the platform's"
    digest = sha256_hex(upgraded)
    checksum = destination.with_name(destination.name + ".sha256")
    assert checksum.read_text() == f"{digest}  {destination.name}\n"
    download = obj["status"]["download"]
    assert download["sha256"] == digest
    assert download["bytes"] == len(upgraded)


def tree(root: Path) -> dict[str, bytes]:
    """Every file under `root`, by relative path."""
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def assert_set_delivered(
    obj: dict[str, Any], volume: Path, destination_path: str, served: Path
) -> int:
    """upgrade-request: the destination directory holds the platform's upgraded set (`served`,
    its `/data/` without the upload) and a SHA256SUMS that `sha256sum -c` accepts, and
    `.status.download` says so. Returns the bytes compared."""
    destination = volume / destination_path
    assert destination.is_dir(), f"{destination_path} not written; status: {describe(obj)}"
    got = tree(destination)
    sums = got.pop("SHA256SUMS")
    expected = {k: v for k, v in tree(served).items() if not k.startswith("origin.")}
    assert got == expected, f"set differs: {sorted(set(got) ^ set(expected))}"
    assert {"upgrade-report.html", "upgrade.log"} <= set(got)
    check = subprocess.run(
        ["sha256sum", "--strict", "-c", "SHA256SUMS"],
        cwd=destination,
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    download = obj["status"]["download"]
    assert download["path"] == f"{destination_path}/upgraded.dump"
    assert download["reportPath"] == f"{destination_path}/upgrade-report.html"
    assert download["files"] == len(got)
    assert download["sha256"] == sha256_hex(sums)
    return sum(len(data) for data in got.values())


def without_nulls(items: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in item.items() if v is not None} for item in items]
