#!/usr/bin/env python3
"""Transfer benchmark: our HTTPS/SFTP transfers side by side with curl and OpenSSH sftp.

On one emulator, in one run, on one file (default 1 GiB):

  HTTPS upload    ours (`upload_https`)  vs  `curl --data-binary @file` and `curl -T file`
  HTTPS download  ours (`download_https`) vs  `curl -o`
  SFTP upload     ours (`upload_sftp`)   vs  OpenSSH `sftp -b -` `put`

Each of our transfers runs in a child process that reports its own time and peak RSS
(`ru_maxrss`), so the memory figure is the transfer's alone. Times are those of the transfer
itself for ours (the call, as the mover makes it; interpreter start-up excluded), the whole
process for curl and sftp (what their user waits for, e.g. `--data-binary @file` first reads
the file into memory; their start-up takes milliseconds). Ours fsyncs and hashes a download,
curl does neither.

Ratios are our throughput / theirs; for the HTTPS upload, against the faster curl variant.
Goals: HTTPS >= 0.9, SFTP >= 0.5, peak RSS < 100 MiB. A missed goal is reported, not fatal.

    .venv/bin/python bench/transfer.py [--size-mib 1024] [--json] [--keep] [--repeat 1]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "operator")]

MIB = 1024 * 1024
BLOCK = 4 * MIB
GOALS = {
    "https_upload_vs_curl": 0.9,
    "https_download_vs_curl": 0.9,
    "sftp_upload_vs_openssh": 0.5,
}
RSS_GOAL_MIB = 100.0


@dataclass
class Measure:
    tool: str
    seconds: float
    size: int
    peak_rss_mib: float | None = None
    failed: str | None = None  # why a reference tool could not do it (curl and 1 GiB bodies)

    @property
    def mib_per_s(self) -> float:
        return self.size / MIB / max(self.seconds, 1e-9)


# -- the child: one of our transfers, timed, with its own peak RSS ---------------------------


def child_main() -> None:
    """Run one transfer described by a JSON job on stdin; print {"seconds", "peak_rss_mib"}."""
    job = json.loads(sys.stdin.read())
    from odoo_upgrade.platform.models import SftpAccess
    from odoo_upgrade.transfer import HostKeyCheck, download_https, upload_https, upload_sftp

    started = time.perf_counter()
    if job["op"] == "upload_https":
        asyncio.run(upload_https(job["url"], job["request_id"], job["key"], job["path"]))
    elif job["op"] == "download_https":
        asyncio.run(download_https(job["url"], Path(job["path"])))
    elif job["op"] == "upload_sftp":
        access = SftpAccess.from_json(job["access"])
        upload_sftp(
            access,
            job["private_pem"],
            job["path"],
            host_key=HostKeyCheck(pinned=job["host_key"]),
        )
    else:
        raise SystemExit(f"unknown job {job['op']!r}")
    seconds = time.perf_counter() - started
    # ru_maxrss is in KiB on Linux.
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "peak_rss_mib": peak}))


def run_ours(tool: str, job: dict[str, Any], size: int) -> Measure:
    result = subprocess.run(
        [sys.executable, __file__, "--child"],
        input=json.dumps(job),
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"{tool} failed:\n{result.stderr[-3000:]}")
    data = json.loads(result.stdout.strip().splitlines()[-1])
    return Measure(tool, data["seconds"], size, data["peak_rss_mib"])


# -- the reference tools --------------------------------------------------------------------


def run_tool(tool: str, args: list[str], size: int, stdin: str | None = None) -> Measure:
    """Wall time of a whole reference process: what its user waits for (start-up is ms)."""
    started = time.perf_counter()
    result = subprocess.run(args, input=stdin, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"{tool} failed: {result.stderr[-2000:]}")
    return Measure(tool, seconds, size)


def run_curl(tool: str, args: list[str], size: int) -> Measure:
    return run_tool(tool, ["curl", "-sS", "--fail-with-body", "-o", "/dev/null", *args], size)


def run_curl_or_note_failure(tool: str, args: list[str], size: int) -> Measure:
    """curl, or a row saying why it could not (`--data-binary @file` holds the whole file in
    memory and gives up with "out of memory" on large files)."""
    try:
        return run_curl(tool, args, size)
    except RuntimeError as exc:
        reason = str(exc).splitlines()[0].split("failed: ")[-1]
        return Measure(tool, float("inf"), size, failed=reason)


def run_curl_download(url: str, destination: Path, size: int) -> Measure:
    return run_tool("curl -o", ["curl", "-sS", "--fail", "-o", str(destination), url], size)


def run_openssh_put(access: dict[str, Any], key_file: Path, path: Path, size: int) -> Measure:
    args = [
        "sftp",
        "-b",
        "-",
        "-P",
        str(access["sftp_port"]),
        "-i",
        str(key_file),
        "-o",
        "BatchMode=yes",
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "LogLevel=ERROR",
        f"{access['sftp_user']}@{access['hostname']}",
    ]
    return run_tool("OpenSSH sftp put", args, size, stdin=f"put {path} {access['shared_file']}\n")


# -- the run --------------------------------------------------------------------------------


def make_file(path: Path, size: int) -> None:
    """A pg_dump custom-format header (so the emulator accepts it as a dump), then
    incompressible-looking data, fast: 4 MiB of urandom, varied per block."""
    from tests.support.emulator import sample_dump_bytes

    base = bytearray(os.urandom(BLOCK))
    with path.open("wb") as out:
        head = sample_dump_bytes("pgdmp", size=4096)
        out.write(head)
        written, counter = len(head), 0
        while written < size:
            base[:8] = counter.to_bytes(8, "little")
            base[-8:] = (counter * 2654435761 % 2**64).to_bytes(8, "little")
            chunk = bytes(base[: min(BLOCK, size - written)])
            out.write(chunk)
            written += len(chunk)
            counter += 1


def fresh_request(emulator: Any, filename: str) -> dict[str, Any]:
    request: dict[str, Any] = emulator.create_request(filename=filename)
    return request


def sftp_access(emulator: Any, request: dict[str, Any], keys_file: Path) -> dict[str, Any]:
    """`request_sftp_access` the way the platform's docs do it: `curl -F ssh_keys=@file`."""
    query = urlencode({"request": request["id"], "key": request["key"]})
    result = subprocess.run(
        [
            "curl",
            "-sS",
            f"{emulator.method_url('request_sftp_access')}?{query}",
            "-F",
            f"ssh_keys=@{keys_file}",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    answer = json.loads(result.stdout)
    if answer.get("failures"):
        raise RuntimeError(f"request_sftp_access failed: {answer['failures']}")
    access: dict[str, Any] = answer["request"]
    return access


def best(measures: list[Measure]) -> Measure:
    return min(measures, key=lambda m: m.seconds)


def benchmark(size: int, workdir: Path, repeat: int) -> tuple[list[Measure], dict[str, float]]:
    from odoo_upgrade.transfer import generate_ssh_keypair  # noqa: I001 (paths set above)
    from tests.support.emulator import RunningEmulator

    source = workdir / "bench.dump"
    print(f"writing a {size // MIB} MiB test file to {source} ...", file=sys.stderr)
    make_file(source, size)
    rows: list[Measure] = []

    with RunningEmulator(workdir / "emulator", process_seconds=0) as emulator:
        # HTTPS upload: ours, curl --data-binary, curl -T — each to a fresh request.
        def upload_url(request: dict[str, Any]) -> str:
            query = urlencode({"request": request["id"], "key": request["key"]})
            return f"{emulator.method_url('upload')}?{query}"

        ours_up, curl_data, curl_t = [], [], []
        done_request: dict[str, Any] | None = None
        for _ in range(repeat):
            request = fresh_request(emulator, "bench.dump")
            ours_up.append(
                run_ours(
                    "odoo-upgrade upload_https",
                    {
                        "op": "upload_https",
                        "url": emulator.url,
                        "request_id": request["id"],
                        "key": request["key"],
                        "path": str(source),
                    },
                    size,
                )
            )
            done_request = request
            request = fresh_request(emulator, "bench.dump")
            curl_data.append(
                run_curl_or_note_failure(
                    "curl --data-binary @file",
                    [
                        "-H",
                        "Content-Type: application/octet-stream",
                        "--data-binary",
                        f"@{source}",
                        upload_url(request),
                    ],
                    size,
                )
            )
            request = fresh_request(emulator, "bench.dump")
            curl_t.append(
                run_curl(
                    "curl -T file",
                    [
                        "-X",
                        "POST",
                        "-H",
                        "Content-Type: application/octet-stream",
                        "-H",
                        "Expect:",
                        "-T",
                        str(source),
                        upload_url(request),
                    ],
                    size,
                )
            )
        rows += [best(ours_up), best(curl_data), best(curl_t)]

        # HTTPS download of the upgraded archive of the request we uploaded.
        assert done_request is not None
        emulator.api("process", request=done_request["id"], key=done_request["key"])
        done = emulator.wait_for_state(done_request["id"], done_request["key"], "done", timeout=600)
        url = done["upgraded_dump_url"]
        download_size = emulator.upgraded_path(done_request["id"]).stat().st_size
        ours_down, curl_down = [], []
        for attempt in range(repeat):
            target = workdir / f"ours-{attempt}.zip"
            ours_down.append(
                run_ours(
                    "odoo-upgrade download_https",
                    {"op": "download_https", "url": url, "path": str(target)},
                    download_size,
                )
            )
            target.unlink()
            target.with_name(target.name + ".sha256").unlink(missing_ok=True)
            curl_target = workdir / f"curl-{attempt}.zip"
            curl_down.append(run_curl_download(url, curl_target, download_size))
            curl_target.unlink()
        rows += [best(ours_down), best(curl_down)]

        # SFTP upload: ours vs OpenSSH, same key pair, each to a fresh request.
        pair = generate_ssh_keypair()
        key_file = workdir / "id_bench"
        key_file.write_text(pair.private_pem)
        key_file.chmod(0o600)
        keys_file = workdir / "authorized_keys"
        keys_file.write_text(pair.public_line + "\n")
        ours_sftp, openssh = [], []
        for _ in range(repeat):
            request = fresh_request(emulator, "bench.dump")
            access = sftp_access(emulator, request, keys_file)
            ours_sftp.append(
                run_ours(
                    "odoo-upgrade upload_sftp",
                    {
                        "op": "upload_sftp",
                        "access": access,
                        "private_pem": pair.private_pem,
                        "path": str(source),
                        "host_key": emulator.host_key_line(),
                    },
                    size,
                )
            )
            request = fresh_request(emulator, "bench.dump")
            access = sftp_access(emulator, request, keys_file)
            openssh.append(run_openssh_put(access, key_file, source, size))
        rows += [best(ours_sftp), best(openssh)]

    peak = max(m.peak_rss_mib or 0.0 for m in rows)
    curl_up = max(best(curl_data).mib_per_s, best(curl_t).mib_per_s)
    figures = {
        "https_upload_vs_curl": round(best(ours_up).mib_per_s / curl_up, 3),
        "https_download_vs_curl": round(best(ours_down).mib_per_s / best(curl_down).mib_per_s, 3),
        "sftp_upload_vs_openssh": round(best(ours_sftp).mib_per_s / best(openssh).mib_per_s, 3),
        "peak_rss_mib": round(peak, 1),
    }
    return rows, figures


def markdown(rows: list[Measure], figures: dict[str, float], size: int) -> str:
    """One row per tool; a reference tool's ratio is our throughput / its throughput."""
    lines = [
        f"Transfers of {size // MIB} MiB on one emulator (loopback)",
        "",
        "| tool | MiB/s | ours / this tool | peak RSS MiB |",
        "| --- | ---: | ---: | ---: |",
    ]
    ours: Measure | None = None
    for m in rows:
        ratio = None
        if m.failed:
            lines.append(f"| {m.tool} | failed: {m.failed} |  |  |")
            continue
        if m.tool.startswith("odoo-upgrade"):
            ours = m
        elif ours is not None:
            ratio = ours.mib_per_s / m.mib_per_s
        lines.append(
            f"| {m.tool} | {m.mib_per_s:.1f} | {'' if ratio is None else f'{ratio:.2f}'} | "
            f"{'' if m.peak_rss_mib is None else f'{m.peak_rss_mib:.1f}'} |"
        )
    lines.append("")
    lines += goal_lines(figures)
    return "\n".join(lines)


def goal_lines(figures: dict[str, float]) -> list[str]:
    lines = []
    for name, goal in GOALS.items():
        verdict = "met" if figures[name] >= goal else "MISSED"
        lines.append(f"- {name}: {figures[name]:.3f} (goal >= {goal}): {verdict}")
    rss = figures["peak_rss_mib"]
    verdict = "met" if rss < RSS_GOAL_MIB else "MISSED"
    lines.append(f"- peak_rss_mib: {rss:.1f} (goal < {RSS_GOAL_MIB:.0f}): {verdict}")
    return lines


def main() -> None:
    if sys.argv[1:] == ["--child"]:
        child_main()
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024, help="test file size (MiB)")
    parser.add_argument("--json", action="store_true", help="print only the JSON figures")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--repeat", type=int, default=1, help="runs per tool; the best counts")
    args = parser.parse_args()
    for tool in ("curl", "sftp"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed (make sysdeps installs it)")
    size = args.size_mib * MIB
    workdir = Path(tempfile.mkdtemp(prefix="odoo-upgrade-bench-"))
    try:
        rows, figures = benchmark(size, workdir, max(args.repeat, 1))
    finally:
        if args.keep:
            print(f"work directory kept: {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        print(json.dumps(figures))
        for line in goal_lines(figures):
            if "MISSED" in line:
                print(f"goal missed: {line[2:]}", file=sys.stderr)
    else:
        print(markdown(rows, figures, size))


if __name__ == "__main__":
    main()
