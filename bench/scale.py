#!/usr/bin/env python3
"""Scale benchmark: N OdooUpgrades at once on the local control plane against the emulator.

One resource runs alone first (the baseline), then a batch of N at once for each `--resources`
(default 100 and 300, in one run), each batch with an operator process of its own, all with
small dumps and short processing. Reported per batch:

- time until all N are Succeeded, against the single resource alone (`overhead_ratio`);
- the slowest and median resource of the batch (creation to Ready);
- platform calls per resource: `create` must be 1; `status` against what the poll interval
  predicts (processing time / pollInterval + 2);
- the operator's peak RSS (VmHWM) and CPU seconds (utime + stime), read from /proc; between
  two batch sizes, the peak RSS growth per resource;
- kube-apiserver requests per resource made by the operator itself (kopf and its client,
  told apart by user agent in the API server's audit log), and beside it those of everyone else
  (Job controller, pod runner, this program's polling);
- the mover pods' CPU (the pod runner's children): not the operator's cost, reported apart.

The pod runner, and so every mover pod it starts, runs at nice 19 (`--movers-nice`): on a
cluster the movers run on the nodes, here they share the operator's two cores, and a few
hundred Python processes starting at once delayed the operator's polls past the platform's
processing (fewer `status` calls than the interval predicts, for a reason not the operator's).
The default processing time, 11 s, is not a multiple of the 5 s interval: at exactly 10 s the
poll at 10 s races the platform's end, and the count flips between 3 and 4.

    .venv/bin/python bench/scale.py [--resources 100 --resources 300] [--poll-interval 5s]
                                    [--process-seconds 11] [--dump-kib 64] [--movers-nice 19]
                                    [--json] [--update-doc]

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
import signal
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
from tests.harness.kubectl import kubectl  # noqa: E402
from tests.harness.local_cluster import LocalCluster  # noqa: E402
from tests.support.emulator import RunningEmulator  # noqa: E402
from tests.support.operator import RunningOperator  # noqa: E402
from tests.support.platform_ports import take_port  # noqa: E402
from tests.support.scenario import (  # noqa: E402
    RESOURCE,
    Kube,
    Namespace,
    condition,
    phase_of,
)

CRD = REPO / "crds" / "odooupgrades.upgrade.odoo-operator.io.yaml"


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
    poll_interval_seconds: float = 5.0
    process_seconds: float = 2.0
    dump_bytes: int = 0
    calls_per_resource: dict[str, float] = field(default_factory=dict)
    status_calls_expected_per_resource: float = 0.0
    operator_cpu_seconds: float = 0.0
    operator_cpu_seconds_per_resource: float = 0.0
    operator_requests_per_resource: float = 0.0
    operator_requests_by_kind: dict[str, float] = field(default_factory=dict)
    other_requests_per_resource: float = 0.0
    mover_cpu_seconds_per_resource: float = 0.0
    # How late the operator's event loop woke its once-a-second timer (its own metric).
    operator_loop_lag_mean_seconds: float = 0.0
    operator_loop_lag_over_half_second_share: float = 0.0
    rss_growth_mib_per_resource: float | None = None  # against the previous, smaller batch


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
    """The CRD's pollInterval shape (`^([0-9]+h)?([0-9]+m)?([0-9]+s)?$`), at least 5s."""
    whole = max(5, round(seconds))
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


OPERATOR_AGENTS = ("kopf/", "odoo-upgrade-operator/")

# The operator under tracemalloc, writing where its memory lives on SIGUSR1 (--trace-memory).
TRACED_OPERATOR = """
import os, signal, sys, tracemalloc
tracemalloc.start(8)
def report(*_):
    top = tracemalloc.take_snapshot().statistics("traceback")[:15]
    with open(os.environ["SCALE_TRACE_FILE"], "w") as out:
        for stat in top:
            out.write(f"{stat.size / 1024:.0f} KiB in {stat.count} blocks\\n")
            out.writelines(f"    {line}\\n" for line in stat.traceback.format()[-8:])
signal.signal(signal.SIGUSR1, report)
sys.argv = ["odoo-upgrade", *sys.argv[1:]]
from odoo_upgrade.cli import main
main()
"""


class TracedOperator(RunningOperator):
    """The operator in a Python that records its allocations (slow: for finding leaks)."""

    def command(self) -> list[str]:
        return [sys.executable, "-c", TRACED_OPERATOR, *super().command()[1:]]


def audit_offset(cluster: LocalCluster) -> int:
    """Where the API server's audit log ends now (a batch counts what comes after)."""
    path = cluster.paths.audit_log
    return path.stat().st_size if path.exists() else 0


def audited_requests(cluster: LocalCluster, since: int) -> tuple[Counter[str], int]:
    """(the operator's requests by `verb resource`, everyone else's count) since an offset."""
    mine: Counter[str] = Counter()
    others = 0
    with cluster.paths.audit_log.open("rb") as log:
        log.seek(since)
        for line in log:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if event.get("stage") != "ResponseComplete":
                continue
            agent = str(event.get("userAgent") or "")
            if agent.startswith(OPERATOR_AGENTS):
                ref = event.get("objectRef") or {}
                kind = ref.get("resource", "(other)")
                if ref.get("subresource"):
                    kind += "/" + ref["subresource"]
                mine[f"{event.get('verb')} {kind}"] += 1
            else:
                others += 1
    return mine, others


def children_cpu_seconds(pid: int) -> float:
    """CPU of the finished children of a process (the pod runner's mover pods)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK")


def podrunner_pid(cluster: LocalCluster) -> int | None:
    try:
        return int(json.loads(cluster.paths.pids.read_text())["podrunner"]["pid"])
    except (OSError, KeyError, ValueError, TypeError):
        return None


# -- the operator process ---------------------------------------------------------------


def operator_usage(pid: int) -> tuple[float, float]:
    """(peak RSS in MiB, CPU seconds) of a live process, from /proc."""
    status = Path(f"/proc/{pid}/status").read_text()
    peak_kib = int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1))  # type: ignore[union-attr]
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return peak_kib / 1024, (int(fields[11]) + int(fields[12])) / ticks


def operator_loop_lag(text: str) -> tuple[float, float]:
    """(mean, share of samples over 0.5 s) of `odoo_upgrade_event_loop_lag_seconds`, from the
    operator's Prometheus text."""
    name = "odoo_upgrade_event_loop_lag_seconds"

    def value(series: str) -> float:
        found = re.search(rf"^{re.escape(series)} (\S+)$", text, re.MULTILINE)
        return float(found.group(1)) if found else 0.0

    count = value(f"{name}_count")
    if not count:
        return 0.0, 0.0
    on_time = value(f'{name}_bucket{{le="0.5"}}')
    return value(f"{name}_sum") / count, (count - on_time) / count


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


def batch_figures(
    size: int,
    objects: list[dict[str, Any]],
    calls: list[dict[str, Any]],
    seconds: tuple[float, float],
    usage: tuple[float, float],
    requests: tuple[Counter[str], int],
    mover_cpu: float,
    lag: tuple[float, float],
    options: argparse.Namespace,
) -> ScaleResult:
    all_seconds, alone_seconds = seconds
    peak_rss, cpu = usage
    mine, others = requests
    succeeded = [o for o in objects if phase_of(o) == "Succeeded"]
    durations = [d for d in (resource_seconds(o) for o in objects) if d is not None]
    request_ids = {
        int(o["status"]["requestId"]) for o in objects if o.get("status", {}).get("requestId")
    }
    per_method = platform_calls(calls, request_ids)
    return ScaleResult(
        resources=size,
        all_succeeded=len(succeeded) == size,
        creates_per_resource=per_method.get("create", 0.0),
        operator_peak_rss_mib=round(peak_rss, 1),
        overhead_ratio=round(all_seconds / alone_seconds, 2) if alone_seconds else 0.0,
        seconds_all=round(all_seconds, 1),
        seconds_alone=round(alone_seconds, 1),
        seconds_slowest_in_batch=max(durations, default=0.0),
        seconds_median_in_batch=statistics.median(durations) if durations else 0.0,
        failed=size - len(succeeded),
        poll_interval_seconds=options.poll_interval,
        process_seconds=options.process_seconds,
        dump_bytes=options.dump_kib * 1024,
        calls_per_resource={k: round(v, 2) for k, v in per_method.items()},
        status_calls_expected_per_resource=round(
            expected_status_calls(options.process_seconds, options.poll_interval), 1
        ),
        operator_cpu_seconds=round(cpu, 1),
        operator_cpu_seconds_per_resource=round(cpu / size, 3),
        operator_requests_per_resource=round(sum(mine.values()) / size, 1),
        operator_requests_by_kind={
            k: round(v / size, 1) for k, v in sorted(mine.items(), key=lambda kv: -kv[1])
        },
        other_requests_per_resource=round(others / size, 1),
        mover_cpu_seconds_per_resource=round(mover_cpu / size, 2),
        operator_loop_lag_mean_seconds=round(lag[0], 3),
        operator_loop_lag_over_half_second_share=round(lag[1], 3),
    )


@contextmanager
def scratch_directory(keep: bool) -> Iterator[str]:
    """Where the emulator's data (calls.jsonl) and the operators' logs go; kept with --keep."""
    if not keep:
        with tempfile.TemporaryDirectory(prefix="scale-") as scratch:
            yield scratch
        return
    scratch = tempfile.mkdtemp(prefix="scale-")
    try:
        yield scratch
    finally:
        print(f"kept: {scratch} (emulator/calls.jsonl, operator-<N>.log)", file=sys.stderr)


def measure(options: argparse.Namespace) -> list[ScaleResult]:
    """The baseline, then one batch per size, each with a fresh operator; their figures."""
    results: list[ScaleResult] = []
    poll = options.poll_interval
    with control_plane() as cluster, scratch_directory(options.keep) as scratch:
        kube = Kube(cluster.kubeconfig)
        kube.run("apply", "-f", str(CRD))
        kube.run(
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/odooupgrades.upgrade.odoo-operator.io",
        )
        emulator = RunningEmulator(
            data_dir=Path(scratch) / "emulator",
            port=take_port(),
            process_seconds=options.process_seconds,
        )
        runner = podrunner_pid(cluster)
        if runner and options.movers_nice:
            os.setpriority(os.PRIO_PROCESS, runner, options.movers_nice)  # its children inherit
        try:
            alone_seconds = 0.0
            for number, size in enumerate(options.resources):
                log = Path(scratch) / f"operator-{size}.log"
                if options.trace_memory:
                    os.environ["SCALE_TRACE_FILE"] = f"{options.trace_memory}.{size}"
                    operator: RunningOperator = TracedOperator(cluster.kubeconfig, log)
                else:
                    operator = RunningOperator(cluster.kubeconfig, log)
                operator.start()
                ns = Namespace.create(kube, cluster.volume_dir, prefix="scale")
                timeout = 300 + 10 * size
                try:
                    ns.prepare(contract=emulator.contract)
                    names = [f"db-{i:04d}" for i in range(size)]
                    for name in ["alone", *names] if number == 0 else names:
                        ns.put_dump(f"dumps/{name}.dump", size=options.dump_kib * 1024)
                    if number == 0:
                        alone_seconds, _ = run_batch(kube, ns, emulator, ["alone"], poll, timeout)
                    before_calls = len(emulator.calls())
                    offset = audit_offset(cluster)
                    movers_before = children_cpu_seconds(runner) if runner else 0.0
                    all_seconds, objects = run_batch(kube, ns, emulator, names, poll, timeout)
                    requests = audited_requests(cluster, offset)
                    movers = (children_cpu_seconds(runner) if runner else 0.0) - movers_before
                    assert operator.pid is not None
                    usage = operator_usage(operator.pid)
                    lag = operator_loop_lag(operator.metrics())
                    if options.trace_memory:
                        os.kill(operator.pid, signal.SIGUSR1)
                        time.sleep(20)  # a snapshot of a big heap takes a while
                    calls = emulator.calls()[before_calls:]
                finally:
                    # Deleted while their operator runs: it releases the finalizers now. Left
                    # to the next batch's operator, that work (and its API requests) fell into
                    # the next batch's figures, and its namespace stayed Terminating.
                    deleting = time.monotonic()
                    kubectl(
                        "delete", RESOURCE, "--all", "-n", ns.name, f"--timeout={timeout}s",
                        kubeconfig=cluster.kubeconfig, check=False, timeout=timeout + 30,
                    )  # fmt: skip
                    print(
                        f"batch of {size}: deleted in {time.monotonic() - deleting:.0f} s",
                        file=sys.stderr,
                    )
                    operator.stop()
                    ns.delete()
                result = batch_figures(
                    size,
                    objects,
                    calls,
                    (all_seconds, alone_seconds),
                    usage,
                    requests,
                    movers,
                    lag,
                    options,
                )
                if results:
                    smaller = results[-1]
                    result.rss_growth_mib_per_resource = round(
                        (result.operator_peak_rss_mib - smaller.operator_peak_rss_mib)
                        / (size - smaller.resources),
                        3,
                    )
                results.append(result)
        finally:
            emulator.stop()
    return results


def markdown(results: list[ScaleResult]) -> str:
    """The figures of every batch as one Markdown table (a column per batch size)."""

    def row(name: str, cell: Any) -> str:
        return f"| {name} | " + " | ".join(str(cell(r)) for r in results) + " |"

    first = results[0]
    lines = [
        f"Dumps of {first.dump_bytes // 1024} KiB, processing {first.process_seconds:g} s, "
        f"pollInterval {first.poll_interval_seconds:g} s.",
        "",
        "| figure | " + " | ".join(f"N = {r.resources}" for r in results) + " |",
        "| --- |" + " --- |" * len(results),
        row("all Succeeded", lambda r: f"{r.all_succeeded} ({r.failed} not)"),
        row("time to all Succeeded", lambda r: f"{r.seconds_all} s"),
        row("one resource alone", lambda r: f"{r.seconds_alone} s"),
        row("overhead ratio (all / alone)", lambda r: r.overhead_ratio),
        row(
            "slowest / median resource",
            lambda r: f"{r.seconds_slowest_in_batch:g} s / {r.seconds_median_in_batch:g} s",
        ),
        row("`create` per resource", lambda r: r.creates_per_resource),
        row(
            "platform calls per resource",
            lambda r: ", ".join(f"{m} {n}" for m, n in r.calls_per_resource.items()),
        ),
        row(
            "`status` expected per resource (processing / pollInterval + 2)",
            lambda r: r.status_calls_expected_per_resource,
        ),
        row("operator peak RSS", lambda r: f"{r.operator_peak_rss_mib} MiB"),
        row(
            "peak RSS growth per resource (vs the smaller batch)",
            lambda r: (
                "-"
                if r.rss_growth_mib_per_resource is None
                else f"{r.rss_growth_mib_per_resource} MiB"
            ),
        ),
        row("operator CPU per resource", lambda r: f"{r.operator_cpu_seconds_per_resource} s"),
        row(
            "operator event loop lag: mean / share of samples over 0.5 s",
            lambda r: (
                f"{r.operator_loop_lag_mean_seconds} s / "
                f"{r.operator_loop_lag_over_half_second_share:.1%}"
            ),
        ),
        row("operator API requests per resource", lambda r: r.operator_requests_per_resource),
        row(
            "  of which",
            lambda r: ", ".join(
                f"{k} {v}" for k, v in list(r.operator_requests_by_kind.items())[:8]
            ),
        ),
        row("other clients' API requests per resource", lambda r: r.other_requests_per_resource),
        row(
            "mover pods' CPU per resource (not the operator's)",
            lambda r: f"{r.mover_cpu_seconds_per_resource} s",
        ),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--resources", type=int, action="append", help="a batch size; repeat (default 100, 300)"
    )
    parser.add_argument("--poll-interval", type=parse_duration, default=5.0)
    parser.add_argument("--process-seconds", type=float, default=11.0)
    parser.add_argument(
        "--movers-nice",
        type=int,
        default=19,
        help="niceness of the pod runner and its mover pods (0: as the operator)",
    )
    parser.add_argument("--dump-kib", type=int, default=64)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument(
        "--keep", action="store_true", help="keep the emulator's calls and the operator logs"
    )
    parser.add_argument(
        "--trace-memory",
        metavar="FILE",
        help="run the operator under tracemalloc; its top allocations go to FILE.<N>",
    )
    parser.add_argument(
        "--update-doc", action="store_true", help="write the table into docs/RELIABILITY.md"
    )
    options = parser.parse_args(argv)
    options.resources = sorted(options.resources or [100, 300])
    results = measure(options)
    if options.json:
        print(json.dumps([asdict(r) for r in results], indent=2))
    else:
        print(markdown(results))
    if options.update_doc:
        sizes = " ".join(f"--resources {n}" for n in options.resources)
        replace_section(
            "scale",
            f"Last run: {utc_stamp()} ({machine_line()}), `bench/scale.py {sizes}`.\n\n"
            f"{markdown(results)}",
        )
    ok = all(r.all_succeeded and r.creates_per_resource == 1 for r in results)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
