#!/usr/bin/env python3
"""Scale benchmark: N OdooUpgrades at once on the local control plane against the emulator.

One resource runs alone first (the baseline), then N at once, all with small dumps and short
processing. Reported:

- time until all N are Succeeded, against the single resource alone (`overhead_ratio`);
- the slowest and median resource of the batch (creation to Ready);
- platform calls per resource: `create` must be 1; `status` against what the poll interval
  predicts (processing time / pollInterval, + 1 poll that sees `done`, + 1 by the download
  mover for the URL);
- the operator's peak RSS (VmHWM) and CPU seconds (utime + stime), read from /proc;
- kube-apiserver requests per resource: the `apiserver_request_total` delta over the batch,
  from every client (operator, Job controller, pod runner, this program's polling), and split
  by resource kind.

    .venv/bin/python bench/scale.py [--resources 100] [--poll-interval 1s] [--json]
                                    [--process-seconds 2] [--dump-kib 64] [--update-doc]

With KUBECONFIG pointing at a `make cluster` kubeconfig that cluster is used (and left
running); otherwise a control plane is started and stopped. `--update-doc` writes the table
into docs/RELIABILITY.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "operator")]

from tests.chaos.reliability_doc import machine_line, replace_section, utc_stamp  # noqa: E402
from tests.harness.cluster import find_binaries, start_cluster  # noqa: E402
from tests.harness.local_cluster import LocalCluster  # noqa: E402
from tests.support.emulator import RunningEmulator  # noqa: E402
from tests.support.operator import RunningOperator  # noqa: E402
from tests.support.scenario import (  # noqa: E402
    RESOURCE,
    Kube,
    Namespace,
    condition,
    phase_of,
)

CRD = REPO / "crds" / "odooupgrades.upgrade.odoo-operator.io.yaml"
REQUEST_METRIC = re.compile(r"^apiserver_request_total\{([^}]*)\} ([0-9.e+]+)$")


@dataclass
class ScaleResult:
    """The figures of one run (`--json` prints these)."""

    resources: int
    all_succeeded: bool
    creates_per_resource: float
    operator_peak_rss_mib: float
    overhead_ratio: float
    seconds_all: float = 0.0
    seconds_alone: float = 0.0
    seconds_slowest_in_batch: float = 0.0
    seconds_median_in_batch: float = 0.0
    failed: int = 0
    poll_interval_seconds: float = 1.0
    process_seconds: float = 2.0
    dump_bytes: int = 0
    calls_per_resource: dict[str, float] = field(default_factory=dict)
    status_calls_expected_per_resource: float = 0.0
    operator_cpu_seconds: float = 0.0
    apiserver_requests_per_resource: float = 0.0
    apiserver_requests_by_resource: dict[str, float] = field(default_factory=dict)


def parse_duration(text: str) -> float:
    """'1s', '500ms', '2m', '1m30s' or a bare number of seconds."""
    if re.fullmatch(r"[0-9.]+", text):
        return float(text)
    units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    parts = re.findall(r"([0-9.]+)(ms|s|m|h)", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 1s, 500ms, 2m)")
    return sum(float(n) * units[u] for n, u in parts)


def go_duration(seconds: float) -> str:
    """The CRD's pollInterval shape (`^([0-9]+h)?([0-9]+m)?([0-9]+s)?$`), at least 1s."""
    whole = max(1, round(seconds))
    minutes, secs = divmod(whole, 60)
    return (f"{minutes}m" if minutes else "") + (f"{secs}s" if secs or not minutes else "")


# -- the control plane -----------------------------------------------------------------


@contextmanager
def control_plane() -> Iterator[LocalCluster]:
    """The cluster KUBECONFIG points at, or a fresh one for the run."""
    reused = os.environ.get("KUBECONFIG")
    if reused and (Path(reused).parent / "server").exists():
        state_dir = Path(reused).resolve().parent
        server = (state_dir / "server").read_text().strip()
        yield LocalCluster(state_dir, server, find_binaries().kubernetes_version)
        return
    state_dir = Path(tempfile.mkdtemp(prefix="odoo-upgrade-scale-"))
    running = start_cluster(state_dir)
    try:
        yield LocalCluster(state_dir, running.server, running.kubernetes_version)
    finally:
        running.stop()


def apiserver_requests(cluster: LocalCluster) -> dict[str, float]:
    """`apiserver_request_total` summed by resource (`""` for non-resource paths)."""
    with cluster.admin_client() as client:
        text = client.get("/metrics").text
    totals: dict[str, float] = {}
    for line in text.splitlines():
        match = REQUEST_METRIC.match(line)
        if match:
            labels = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1)))
            kind = labels.get("resource", "")
            totals[kind] = totals.get(kind, 0.0) + float(match.group(2))
    return totals


# -- the operator process ---------------------------------------------------------------


def operator_usage(pid: int) -> tuple[float, float]:
    """(peak RSS in MiB, CPU seconds) of a live process, from /proc."""
    status = Path(f"/proc/{pid}/status").read_text()
    peak_kib = int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1))  # type: ignore[union-attr]
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return peak_kib / 1024, (int(fields[11]) + int(fields[12])) / ticks


# -- one batch ------------------------------------------------------------------------


def parse_time(stamp: str) -> float:
    return datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def resource_seconds(obj: dict[str, Any]) -> float | None:
    """Creation to Ready=True, from the resource itself (1 s resolution)."""
    ready = condition(obj, "Ready")
    if not ready or ready.get("status") != "True":
        return None
    return parse_time(ready["lastTransitionTime"]) - parse_time(
        obj["metadata"]["creationTimestamp"]
    )


def run_batch(
    kube: Kube,
    ns: Namespace,
    emulator: RunningEmulator,
    names: list[str],
    poll: float,
    timeout: float,
) -> tuple[float, list[dict[str, Any]]]:
    """Apply one OdooUpgrade per name and wait for all to end; (seconds, final objects)."""
    manifests = []
    for name in names:
        manifests.append(
            {
                "apiVersion": "upgrade.odoo-operator.io/v1alpha1",
                "kind": "OdooUpgrade",
                "metadata": {"name": name, "namespace": ns.name},
                "spec": {
                    "target": "18.0",
                    "aim": "test",
                    "email": "ops@acme.example",
                    "contractSecretRef": {"name": "odoo-contract", "key": "contract"},
                    "source": {"claimName": "odoo-backups", "path": f"dumps/{name}.dump"},
                    "destination": {"claimName": "odoo-backups", "path": f"upgraded/{name}.dump"},
                    "transport": "https",
                    "platform": {"url": emulator.url, "pollInterval": go_duration(poll)},
                },
            }
        )
    started = time.monotonic()
    for chunk in range(0, len(manifests), 50):
        kube.apply(*manifests[chunk : chunk + 50])
    wanted = set(names)
    while True:
        items = kube.json("get", RESOURCE, "-n", ns.name).get("items", [])
        mine = [o for o in items if o["metadata"]["name"] in wanted]
        if len(mine) == len(wanted) and all(phase_of(o) in ("Succeeded", "Failed") for o in mine):
            return time.monotonic() - started, mine
        if time.monotonic() - started > timeout:
            return time.monotonic() - started, mine
        time.sleep(1.0)


def platform_calls(all_calls: list[dict[str, Any]], request_ids: set[int]) -> dict[str, float]:
    """Platform calls per resource, by method."""
    calls = [c for c in all_calls if c.get("request") in request_ids]
    per_method = Counter(c["method"] for c in calls)
    count = max(1, len(request_ids))
    return {method: n / count for method, n in sorted(per_method.items())}


def expected_status_calls(process_seconds: float, poll: float) -> float:
    """The operator polls once per interval while the platform processes, plus the poll that
    sees `done`; the download mover asks `status` once for the upgraded dump's URL."""
    return process_seconds / poll + 1 + 1


def measure(resources: int, poll: float, process_seconds: float, dump_kib: int) -> ScaleResult:
    """Run the baseline and the batch; return the figures."""
    with control_plane() as cluster, tempfile.TemporaryDirectory(prefix="scale-") as scratch:
        kube = Kube(cluster.kubeconfig)
        kube.run("apply", "-f", str(CRD))
        kube.run(
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/odooupgrades.upgrade.odoo-operator.io",
        )
        emulator = RunningEmulator(
            data_dir=Path(scratch) / "emulator", process_seconds=process_seconds
        )
        operator = RunningOperator(cluster.kubeconfig, Path(scratch) / "operator.log")
        operator.start()
        ns = Namespace.create(kube, cluster.volume_dir, prefix="scale")
        try:
            ns.prepare(contract=emulator.contract)
            names = [f"db-{i:04d}" for i in range(resources)]
            for name in ["alone", *names]:
                ns.put_dump(f"dumps/{name}.dump", size=dump_kib * 1024)
            timeout = 300 + 10 * resources
            alone_seconds, alone = run_batch(kube, ns, emulator, ["alone"], poll, timeout)
            before = apiserver_requests(cluster)
            all_seconds, objects = run_batch(kube, ns, emulator, names, poll, timeout)
            after = apiserver_requests(cluster)
            assert operator.pid is not None
            peak_rss, cpu = operator_usage(operator.pid)
            calls = emulator.calls()  # before the scratch directory goes
        finally:
            operator.stop()
            emulator.stop()
            ns.delete()
    succeeded = [o for o in objects if phase_of(o) == "Succeeded"]
    durations = [d for d in (resource_seconds(o) for o in objects) if d is not None]
    request_ids = {
        int(o["status"]["requestId"]) for o in objects if o.get("status", {}).get("requestId")
    }
    per_method = platform_calls(calls, request_ids)
    expected_status = expected_status_calls(process_seconds, poll)
    creates = sum(1 for c in calls if c["method"] == "create" and c.get("ok")) - len(alone)
    delta = {k: after[k] - before.get(k, 0.0) for k in after if after[k] - before.get(k, 0.0) > 0}
    return ScaleResult(
        resources=resources,
        all_succeeded=len(succeeded) == resources,
        creates_per_resource=round(creates / resources, 3),
        operator_peak_rss_mib=round(peak_rss, 1),
        overhead_ratio=round(all_seconds / alone_seconds, 2) if alone_seconds else 0.0,
        seconds_all=round(all_seconds, 1),
        seconds_alone=round(alone_seconds, 1),
        seconds_slowest_in_batch=max(durations, default=0.0),
        seconds_median_in_batch=statistics.median(durations) if durations else 0.0,
        failed=resources - len(succeeded),
        poll_interval_seconds=poll,
        process_seconds=process_seconds,
        dump_bytes=dump_kib * 1024,
        calls_per_resource={k: round(v, 2) for k, v in per_method.items()},
        status_calls_expected_per_resource=round(expected_status, 1),
        operator_cpu_seconds=round(cpu, 1),
        apiserver_requests_per_resource=round(sum(delta.values()) / resources, 1),
        apiserver_requests_by_resource={
            (k or "(non-resource)"): round(v / resources, 1)
            for k, v in sorted(delta.items(), key=lambda kv: -kv[1])
        },
    )


def markdown(result: ScaleResult) -> str:
    """The figures as a Markdown table."""
    calls = ", ".join(f"{m} {n}" for m, n in result.calls_per_resource.items())
    by_kind = ", ".join(
        f"{k} {v}" for k, v in list(result.apiserver_requests_by_resource.items())[:6]
    )
    rows = [
        (
            "resources",
            f"{result.resources} (dump {result.dump_bytes // 1024} KiB, processing "
            f"{result.process_seconds:g} s, pollInterval {result.poll_interval_seconds:g} s)",
        ),
        ("all Succeeded", f"{result.all_succeeded} ({result.failed} not)"),
        ("time to all Succeeded", f"{result.seconds_all} s"),
        ("one resource alone", f"{result.seconds_alone} s"),
        ("overhead ratio (all / alone)", f"{result.overhead_ratio}"),
        (
            "slowest / median resource in the batch",
            f"{result.seconds_slowest_in_batch:g} s / {result.seconds_median_in_batch:g} s",
        ),
        ("`create` per resource", f"{result.creates_per_resource}"),
        ("platform calls per resource", calls),
        (
            "`status` calls expected per resource (processing / pollInterval + 2)",
            f"{result.status_calls_expected_per_resource}",
        ),
        ("operator peak RSS", f"{result.operator_peak_rss_mib} MiB"),
        ("operator CPU", f"{result.operator_cpu_seconds} s"),
        (
            "kube-apiserver requests per resource (all clients)",
            f"{result.apiserver_requests_per_resource} ({by_kind})",
        ),
    ]
    return "\n".join(["| figure | value |", "| --- | --- |", *(f"| {k} | {v} |" for k, v in rows)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--resources", type=int, default=100)
    parser.add_argument("--poll-interval", type=parse_duration, default=1.0)
    parser.add_argument("--process-seconds", type=float, default=2.0)
    parser.add_argument("--dump-kib", type=int, default=64)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument(
        "--update-doc", action="store_true", help="write the table into docs/RELIABILITY.md"
    )
    args = parser.parse_args(argv)
    result = measure(args.resources, args.poll_interval, args.process_seconds, args.dump_kib)
    if args.json:
        print(json.dumps(asdict(result), indent=2))
    else:
        print(markdown(result))
    if args.update_doc:
        replace_section(
            "scale",
            f"Last run: {utc_stamp()} ({machine_line()}), "
            f"`bench/scale.py --resources {args.resources}`.\n\n{markdown(result)}",
        )
    return 0 if result.all_succeeded and result.creates_per_resource == 1 else 1


if __name__ == "__main__":
    sys.exit(main())
