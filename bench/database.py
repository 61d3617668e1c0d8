#!/usr/bin/env python3
"""Database benchmark: dump + restore through `odoo_upgrade.database` next to pg_dump/pg_restore.

On one real PostgreSQL server (tests/harness/postgres.py), on Odoo-like databases of growing
size (tests/support/odoo_db.py), in one run:

  ours     `dump_database` (pg_dump -Fc --no-owner streamed to .part, sha256, fsync, rename,
           .sha256) then `restore_database` (temporary database, pg_restore --no-owner
           --no-privileges --jobs 2, base-series check, rename)
  by hand  `pg_dump -Fc --no-owner -f FILE` then `createdb` + `pg_restore --no-owner
           --no-privileges --jobs 2 -d NEW FILE`

Ours runs in a child process that reports its own time and peak RSS (`ru_maxrss` of the
Python process, not of pg_dump/pg_restore, which both sides run alike); by hand is timed as
the two commands' wall time. The ratio is our throughput / by hand's (time by hand / ours);
goal >= 0.9, and the peak RSS flat in the database's size.

    .venv/bin/python bench/database.py [--partners 200000,2000000] [--repeat 1] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "operator")]

from tests.harness.postgres import PostgresServer, load_recorded, temporary_postgres  # noqa: E402
from tests.support.odoo_db import create_odoo_database  # noqa: E402

MIB = 1024 * 1024
JOBS = 2
RATIO_GOAL = 0.9
SERIES = "16.0"


@dataclass
class Run:
    partners: int
    table_mib: float
    dump_mib: float
    ours_dump: float
    ours_restore: float
    ours_rss_mib: float
    hand_dump: float
    hand_restore: float

    @property
    def ratio(self) -> float:
        return (self.hand_dump + self.hand_restore) / (self.ours_dump + self.ours_restore)


# -- the child: our dump and restore, timed, with the process's own peak RSS ----------------


def child_main() -> None:
    job = json.loads(sys.stdin.read())
    from odoo_upgrade.database import dump_database, restore_database, settings_from_secret

    settings = settings_from_secret(job["secret"])
    started = time.perf_counter()
    dump_database(settings, job["database"], Path(job["dump"]))
    dumped = time.perf_counter()
    restore_database(
        settings, Path(job["dump"]), job["target"], target=SERIES, token="bench", jobs=JOBS
    )
    restored = time.perf_counter()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(json.dumps({"dump": dumped - started, "restore": restored - dumped, "rss": peak}))


def run_ours(server: PostgresServer, database: str, dump: Path, target: str) -> dict[str, Any]:
    job = {
        "secret": server.secret_data(),
        "database": database,
        "dump": str(dump),
        "target": target,
    }
    result = subprocess.run(
        [sys.executable, __file__, "--child"],
        input=json.dumps(job),
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"ours failed:\n{result.stderr[-3000:]}")
    data: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return data


# -- by hand ------------------------------------------------------------------------------


def timed(args: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(args, env=env, check=True, capture_output=True)
    return time.perf_counter() - started


def run_by_hand(
    server: PostgresServer, database: str, dump: Path, target: str
) -> tuple[float, float]:
    bin_dir = Path(server.bin_dir)
    env = server.client_env(superuser=False, database=database)
    dump_seconds = timed(
        [str(bin_dir / "pg_dump"), "--format=custom", "--no-owner", "-f", str(dump)], env
    )
    restore_seconds = timed(
        [str(bin_dir / "createdb"), "--template=template0", "--encoding=UTF8", target], env
    ) + timed(
        [
            str(bin_dir / "pg_restore"),
            "--no-owner",
            "--no-privileges",
            "--exit-on-error",
            f"--jobs={JOBS}",
            f"--dbname={target}",
            str(dump),
        ],
        env,
    )
    return dump_seconds, restore_seconds


# -- the run ------------------------------------------------------------------------------


@contextmanager
def server_for_bench() -> Iterator[PostgresServer]:
    recorded = os.environ.get("ODOO_UPGRADE_POSTGRES_STATE")
    if recorded:
        server = load_recorded(Path(recorded))
        if server is None:
            raise SystemExit(f"no server recorded in {recorded}")
        yield server
        return
    with temporary_postgres() as server:
        yield server


def table_mib(server: PostgresServer, database: str) -> float:
    rows = server.rows(
        "SELECT sum(pg_table_size(oid)) FROM pg_class WHERE relnamespace = 'public'::regnamespace"
        " AND relkind = 'r'",
        database,
    )
    return int(rows[0][0]) / MIB


def measure(server: PostgresServer, partners: int, workdir: Path, repeat: int) -> Run:
    name = f"bench_{partners}"
    server.drop_database(name)
    print(f"creating {name} ...", file=sys.stderr)
    create_odoo_database(server, name, workdir / "filestore" / name, partners=partners,
                         attachments=200)  # fmt: skip
    server.psql("VACUUM ANALYZE", name)
    best: Run | None = None
    for attempt in range(repeat):
        hand_dump_path, ours_dump_path = workdir / "hand.dump", workdir / "ours.dump"
        for path in (hand_dump_path, ours_dump_path, workdir / "ours.dump.sha256"):
            path.unlink(missing_ok=True)
        for target in (f"{name}_hand", f"{name}_ours"):
            server.drop_database(target)
        print(f"{name}: run {attempt + 1}/{repeat} ...", file=sys.stderr)
        hand_dump, hand_restore = run_by_hand(server, name, hand_dump_path, f"{name}_hand")
        ours = run_ours(server, name, ours_dump_path, f"{name}_ours")
        run = Run(
            partners=partners,
            table_mib=table_mib(server, name),
            dump_mib=ours_dump_path.stat().st_size / MIB,
            ours_dump=ours["dump"],
            ours_restore=ours["restore"],
            ours_rss_mib=ours["rss"],
            hand_dump=hand_dump,
            hand_restore=hand_restore,
        )
        if best is None or run.ratio > best.ratio:
            best = run
    for target in (name, f"{name}_hand", f"{name}_ours"):
        server.drop_database(target)
    assert best is not None
    return best


def markdown(runs: list[Run]) -> str:
    lines = [
        "| partners | table data MiB | dump MiB | ours dump s | ours restore s | by hand dump s "
        "| by hand restore s | ours / by hand | our peak RSS MiB |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in runs:
        lines.append(
            f"| {r.partners:,} | {r.table_mib:.0f} | {r.dump_mib:.1f} | {r.ours_dump:.2f} | "
            f"{r.ours_restore:.2f} | {r.hand_dump:.2f} | {r.hand_restore:.2f} | "
            f"{r.ratio:.2f} | {r.ours_rss_mib:.1f} |"
        )
    worst = min(r.ratio for r in runs)
    rss = [r.ours_rss_mib for r in runs]
    lines += [
        "",
        f"- ours / by hand (worst size): {worst:.3f} (goal >= {RATIO_GOAL}): "
        f"{'met' if worst >= RATIO_GOAL else 'MISSED'}",
        f"- our peak RSS: {min(rss):.1f} to {max(rss):.1f} MiB over a "
        f"{runs[-1].table_mib / max(runs[0].table_mib, 1e-9):.0f}x larger database",
    ]
    return "\n".join(lines)


def main() -> None:
    if sys.argv[1:] == ["--child"]:
        child_main()
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--partners", default="200000,2000000", help="database sizes (rows)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per size; the best counts")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    sizes = [int(s) for s in args.partners.split(",") if s.strip()]
    workdir = Path(tempfile.mkdtemp(prefix="odoo-upgrade-bench-db-"))
    try:
        with server_for_bench() as server:
            runs = [measure(server, n, workdir, max(args.repeat, 1)) for n in sizes]
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        print(json.dumps([{**r.__dict__, "ratio": round(r.ratio, 3)} for r in runs]))
    else:
        print(markdown(runs))


if __name__ == "__main__":
    main()
