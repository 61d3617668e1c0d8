"""The harness's PostgreSQL server as `make cluster` / `make demo` start it: from a clone under
a 0700 home (root's is), where the server's own user cannot reach into the state dir."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.harness.postgres import load_recorded, start_postgres, stop_recorded

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the server runs as another user")


def test_a_state_dir_the_server_cannot_reach_gets_a_data_dir_it_can(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    state = home / "clone" / ".cluster"

    server = start_postgres(state)
    try:
        assert server.is_running()
        assert not Path(server.root).is_relative_to(state)  # relocated out of the home
        assert server.psql("SELECT 1").strip() == "1"
        assert load_recorded(state) == server  # the record (passwords) stays in the state dir
    finally:
        assert stop_recorded(state)
    assert not Path(server.root).exists()  # nothing left behind outside the state dir
    assert load_recorded(state) is None
