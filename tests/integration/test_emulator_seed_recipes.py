"""The platform documentation's own bash recipes (curl + jq) and OpenSSH `sftp` session, run
unmodified against the emulator: only the host in the URLs is replaced."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from tests.support.emulator import RunningEmulator, sample_dump_bytes

SEED_HOST = "https://upgrade.odoo.com"

# From the seed's upgrade_api.txt, line breaks restored.
CREATE_RECIPE = """\
CONTRACT=M123456-abcdef
AIM=test
TARGET=8.0
EMAIL=john.doe@example.com
FILENAME=db_name.dump
CREATE_URL="https://upgrade.odoo.com/database/v1/create"
URL_PARAMS="contract=${CONTRACT}&aim=${AIM}&target=${TARGET}&email=${EMAIL}&filename=${FILENAME}"
curl -sS "${CREATE_URL}?${URL_PARAMS}" > create_result.json

# check for failures
failures=$(cat create_result.json | jq -r '.failures[]')
if [ "$failures" != "" ]; then
  echo $failures | jq -r '.'
  exit 1
fi
"""

UPLOAD_RECIPE = """\
UPLOAD_URL="https://upgrade.odoo.com/database/v1/upload"
DUMPFILE="openchs.70.cdump"
KEY="Aw7pItGVKFuZ_FOR3U8VFQ=="
REQUEST_ID="10534"
URL_PARAMS="key=${KEY}&request=${REQUEST_ID}"
HEADER="Content-Type: application/octet-stream"
curl -H $HEADER --data-binary "@${DUMPFILE}" "${UPLOAD_URL}?${URL_PARAMS}"
"""

SFTP_ACCESS_RECIPE = """\
REQUEST_SFTP_ACCESS_URL="https://upgrade.odoo.com/database/v1/request_sftp_access"
SSH_KEYS=/path/to/your/authorized_keys
KEY="Aw7pItGVKFuZ_FOR3U8VFQ=="
REQUEST_ID="10534"
URL_PARAMS="key=${KEY}&request=${REQUEST_ID}"
curl -sS "${REQUEST_SFTP_ACCESS_URL}?${URL_PARAMS}" -F ssh_keys=@${SSH_KEYS} > request_sftp_result.json

# check for failures
failures=$(cat request_sftp_result.json | jq -r '.failures[]')
if [ "$failures" != "" ]; then
  echo $failures | jq -r '.'
  exit 1
fi
"""  # noqa: E501 (verbatim)

PROCESS_RECIPE = """\
PROCESS_URL="https://upgrade.odoo.com/database/v1/process"
KEY="Aw7pItGVKFuZ_FOR3U8VFQ=="
REQUEST_ID="10534"
URL_PARAMS="key=${KEY}&request=${REQUEST_ID}"
curl -sS "${PROCESS_URL}?${URL_PARAMS}"
"""

STATUS_RECIPE = """\
STATUS_URL="https://upgrade.odoo.com/database/v1/status"
KEY="Aw7pItGVKFuZ_FOR3U8VFQ=="
REQUEST_ID="10534"
URL_PARAMS="key=${KEY}&request=${REQUEST_ID}"
curl -sS "${STATUS_URL}?${URL_PARAMS}"
"""


def run_recipe(
    recipe: str,
    emu: RunningEmulator,
    cwd: Path,
    request: dict[str, Any] | None = None,
    **replace: str,
) -> subprocess.CompletedProcess[str]:
    """Run `recipe` in bash with the seed's host swapped for the emulator's (and, where the
    recipe hard-codes the sample request, its id and key swapped for a real one)."""
    script = recipe.replace(SEED_HOST, emu.url)
    if request is not None:
        script = script.replace('KEY="Aw7pItGVKFuZ_FOR3U8VFQ=="', f'KEY="{request["key"]}"')
        script = script.replace('REQUEST_ID="10534"', f'REQUEST_ID="{request["id"]}"')
    for old, new in replace.items():
        script = script.replace(old, new)
    return subprocess.run(
        ["bash", "-c", script], cwd=cwd, capture_output=True, text=True, timeout=60
    )


def test_seed_create_recipe_creates_a_request(emulator: RunningEmulator, tmp_path: Path) -> None:
    result = run_recipe(CREATE_RECIPE, emulator, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    request = json.loads((tmp_path / "create_result.json").read_text())["request"]
    assert (request["state"], request["target"], request["filename"]) == (
        "draft", "8.0", "db_name.dump",
    )  # fmt: skip


def test_seed_create_recipe_reports_failures(make_emulator: Any, tmp_path: Path) -> None:
    emu = make_emulator(contracts=["M999999-other"])
    result = run_recipe(CREATE_RECIPE, emu, tmp_path)
    assert result.returncode == 1
    assert "CONTRACT:NOT_FOUND" in result.stdout


def test_seed_upload_process_status_recipes(make_emulator: Any, tmp_path: Path) -> None:
    emu = make_emulator(process_seconds=0)
    request = emu.create_request()
    dump = sample_dump_bytes("pgdmp", size=50_000)
    (tmp_path / "openchs.70.cdump").write_bytes(dump)
    # The recipe's unquoted $HEADER sends an empty Content-Type (and asks curl for a second,
    # unresolvable URL): the upload must still be taken raw.
    upload = run_recipe(UPLOAD_RECIPE, emu, tmp_path, request)
    assert json.loads(upload.stdout)["failures"] == [], upload.stdout + upload.stderr
    assert emu.original_path(request["id"]).read_bytes() == dump
    process = run_recipe(PROCESS_RECIPE, emu, tmp_path, request)
    assert json.loads(process.stdout)["failures"] == []
    emu.wait_for_state(request["id"], request["key"], "done")
    status = run_recipe(STATUS_RECIPE, emu, tmp_path, request)
    assert json.loads(status.stdout)["request"]["state"] == "done"


def test_seed_sftp_recipe_and_session(emulator: RunningEmulator, tmp_path: Path) -> None:
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    authorized = tmp_path / "authorized_keys"
    authorized.write_text(f"# keys for the upgrade\n\n{key.with_suffix('.pub').read_text()}")
    request = emulator.create_request(filename="openchs.70.cdump")
    access = run_recipe(
        SFTP_ACCESS_RECIPE, emulator, tmp_path, request,
        **{"/path/to/your/authorized_keys": str(authorized)},
    )  # fmt: skip
    assert access.returncode == 0, access.stdout + access.stderr
    answer = json.loads((tmp_path / "request_sftp_result.json").read_text())["request"]
    dump = tmp_path / "openchs.70.cdump"
    dump.write_bytes(sample_dump_bytes("pgdmp", size=80_000))
    # The documented pipe, with only the test's key and host-key options added to the
    # sample_command the platform answered.
    command = answer["sample_command"].replace(
        "sftp ",
        f"sftp -b - -i {key} -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null ",
    )
    session = subprocess.run(
        ["bash", "-c", f'echo "put {dump} openchs.70.cdump" | {command}'],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert session.returncode == 0, session.stderr
    assert emulator.original_path(request["id"]).read_bytes() == dump.read_bytes()
