"""Write generated figures into docs/RELIABILITY.md between marker comments.

The page is hand-written prose with two generated sections: `chaos` (written by the
session-finish hook of `make chaos`) and `scale` (written by `bench/scale.py --update-doc`).
Each writer replaces only its own section, so neither erases the other's figures.
"""

from __future__ import annotations

import datetime
import os
import platform
from pathlib import Path

from tests.chaos.ledger import RunFigures

RELIABILITY_DOC = Path(__file__).resolve().parents[2] / "docs" / "RELIABILITY.md"


def _markers(section: str) -> tuple[str, str]:
    return (
        f"<!-- BEGIN {section} figures: generated, do not edit by hand -->",
        f"<!-- END {section} figures -->",
    )


def replace_section(section: str, body: str, path: Path = RELIABILITY_DOC) -> None:
    """Replace the text between the `section` markers of `path` (appended if absent)."""
    begin, end = _markers(section)
    text = path.read_text() if path.exists() else ""
    block = f"{begin}\n{body.rstrip()}\n{end}"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        _, tail = rest.split(end, 1)
        text = head + block + tail
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)


def utc_stamp() -> str:
    """Now, to the second, in UTC (when the figures were taken)."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def machine_line() -> str:
    """A line saying where the figures come from."""
    python = platform.python_version()
    return f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs, Python {python}"


SLOW_ANSWER = "slow platform answer"


def render_chaos_figures(figures: RunFigures, duration_seconds: float) -> str:
    """The `chaos` section: faults injected, inputs tried, resources, bytes, lost."""
    slow = sum(n for kind, n in figures.faults.items() if kind.startswith(SLOW_ANSWER))
    other = sum(figures.faults.values()) - slow
    lines = [
        f"Last run: {utc_stamp()} ({machine_line()}), {duration_seconds:.0f} s, "
        f"tests passed {figures.tests_passed}, failed {figures.tests_failed}, "
        f"skipped {figures.tests_skipped}.",
        "",
        "| figure | value |",
        "| --- | --- |",
        f"| faults injected (kills, restarts, 5xx answers, cut transfers) | {other} |",
        f"| platform answers slowed down on purpose | {slow} |",
        f"| bad inputs tried | {len(figures.inputs)} |",
        f"| resources run to the end | {figures.resources} |",
        f"| resources verified (outcome as expected; faults: Succeeded, one create, "
        f"bytes equal, no partial file) | {figures.verified} |",
        f"| upgraded bytes compared | {figures.bytes} |",
        f"| **lost** | **{figures.lost}** |",
        "",
        "Faults by kind:",
        "",
        "| fault | times |",
        "| --- | --- |",
    ]
    lines += [f"| {kind} | {count} |" for kind, count in sorted(figures.faults.items())]
    if figures.inputs:
        lines += [
            "",
            "Bad inputs tried: " + ", ".join(f"`{case}`" for case in figures.inputs) + ".",
        ]
    return "\n".join(lines)
