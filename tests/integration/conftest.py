"""Fixtures for tests against the emulator over real HTTP and SFTP on loopback."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.emulator import RunningEmulator


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[RunningEmulator]:
    """A fresh emulator (process takes 1 s) with its data dir under tmp_path."""
    with RunningEmulator(tmp_path / "emulator", process_seconds=1) as running:
        yield running


@pytest.fixture
def make_emulator(tmp_path: Path) -> Iterator[Callable[..., RunningEmulator]]:
    """A factory: `make_emulator(fail_rate=1.0, ...)` starts one with these flags; all are
    stopped at the end of the test."""
    started: list[RunningEmulator] = []

    def make(**flags: Any) -> RunningEmulator:
        running = RunningEmulator(tmp_path / f"emulator-{len(started)}", **flags)
        started.append(running)
        return running

    yield make
    for running in started:
        running.stop()


@pytest.fixture(scope="module")
def shared_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningEmulator]:
    """One emulator (process_seconds=0) for a whole test module, for tests that only look at
    their own requests; saves a process start per test."""
    with RunningEmulator(tmp_path_factory.mktemp("shared-emulator"), process_seconds=0) as running:
        yield running
