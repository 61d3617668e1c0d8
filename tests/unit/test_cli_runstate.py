"""The state file of `odoo-upgrade run`: secret, atomic, and strict about its shape."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from odoo_upgrade.runstate import RunState, StateFileError, Step, load_state, save_state


def sample_state(**overrides: object) -> RunState:
    values: dict[str, object] = {
        "request_id": 10534,
        "key": "Aw7pItGVKFuZ_FOR3U8VFQ==",
        "platform_url": "http://127.0.0.1:1",
        "dump": "/data/acme.dump",
        "dump_size": 1234,
        "target": "18.0",
        "aim": "test",
        "filename": "acme.dump",
        "transport": "https",
    }
    values.update(overrides)
    return RunState(**values)  # type: ignore[arg-type]


def test_state_file_is_private_from_its_first_byte(tmp_path: Path) -> None:
    path = tmp_path / "acme.dump.odoo-upgrade.json"
    save_state(path, sample_state())
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_saving_again_replaces_the_file_and_leaves_no_temp_file(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    save_state(path, sample_state())
    save_state(path, sample_state(step=Step.UPLOADED, upload_sha256="ab" * 32))
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]
    loaded = load_state(path)
    assert loaded is not None
    assert loaded.step is Step.UPLOADED
    assert loaded.upload_sha256 == "ab" * 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_stale_temp_file_from_a_killed_run_does_not_block_saving(tmp_path: Path) -> None:
    import os

    path = tmp_path / "state.json"
    (tmp_path / f".state.json.{os.getpid()}.tmp").write_text("half written")
    save_state(path, sample_state())
    assert load_state(path) == sample_state()
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_missing_state_file_means_first_run(tmp_path: Path) -> None:
    assert load_state(tmp_path / "absent.json") is None


def test_state_file_that_is_not_json_is_refused_with_its_path(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text("{not json")
    with pytest.raises(StateFileError, match=r"state\.json is not valid JSON"):
        load_state(path)


def test_state_file_with_an_unknown_step_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    data = sample_state().to_json()
    data["step"] = "teleported"
    path.write_text(json.dumps(data))
    with pytest.raises(StateFileError, match="expected shape"):
        load_state(path)


def test_state_file_of_another_format_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    data = sample_state().to_json()
    data["version"] = 99
    path.write_text(json.dumps(data))
    with pytest.raises(StateFileError, match="format 99"):
        load_state(path)


def test_steps_are_ordered_as_the_flow_reaches_them() -> None:
    assert Step.PROCESSING.reached(Step.UPLOADED)
    assert not Step.CREATED.reached(Step.UPLOADED)
    assert Step.DOWNLOADED.reached(Step.DOWNLOADED)
