"""Find and kill mover processes, which the test pod runner runs as local processes.

A mover pod of Job `<name>-upload` is named `<name>-upload-xxxxx`; the pod runner gives its
process `HOSTNAME=<pod name>` as a kubelet would. Scanning /proc for `odoo-upgrade mover`
command lines with that HOSTNAME finds it without any help from the runner.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path


def _environ(pid: str) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
    return {k.decode(errors="replace"): v.decode(errors="replace") for k, v in pairs}


def mover_pids(job_name: str) -> list[int]:
    """Pids of running `odoo-upgrade mover` processes of pods of Job `job_name`."""
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        words = [w.decode(errors="replace") for w in argv if w]
        if "mover" not in words or not any(w.endswith("odoo-upgrade") for w in words):
            continue
        if _environ(entry.name).get("HOSTNAME", "").startswith(f"{job_name}-"):
            found.append(int(entry.name))
    return found


def kill_movers(job_name: str) -> int:
    """SIGKILL every mover process of `job_name`, as an OOM kill or node loss would; count."""
    killed = 0
    for pid in mover_pids(job_name):
        try:
            os.kill(pid, signal.SIGKILL)
            killed += 1
        except ProcessLookupError:
            continue
    return killed
