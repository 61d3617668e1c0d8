"""`reconcile`, pass after pass, against an in-memory cluster and a real emulator: one test per
branch of the flow. The movers are the real `odoo-upgrade mover` processes; only the cluster
(API server, Job controller, kubelet) is a stand-in (tests/support/fake_cluster.py).

The behaviour both platform APIs share is one test parametrised by `api` (database-v1 over
HTTPS, upgrade-request over rsync); each API's own cases follow.

No control plane is needed; each test takes a second or two.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import json
import logging
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest

from odoo_upgrade.controller import metrics, settings
from odoo_upgrade.controller.conditions import now_rfc3339
from odoo_upgrade.controller.flow import reconcile
from odoo_upgrade.controller.handlers import delete_children
from odoo_upgrade.controller.jobs import Owner
from odoo_upgrade.controller.outcomes import Again, Finished, Waiting
from odoo_upgrade.controller.resource import Upgrade
from odoo_upgrade.emulator.dumps import NOT_A_DUMP_MESSAGE
from odoo_upgrade.platform import PlatformError
from odoo_upgrade.request.mover_result import MoverResult
from odoo_upgrade.request.ssh_keys import generate_ssh_keypair
from tests.support.emulator import RunningEmulator, sample_dump_bytes
from tests.support.fake_cluster import FakeCluster
from tests.support.front import PlatformFront

NS = "odoo"
NAME = "acme-to-18"
SOURCE = "dumps/acme.dump"
DESTINATION = "upgraded/acme-18.dump"
V1 = "database-v1"
UR = "upgrade-request"
APIS = (V1, UR)
# Where each API puts the upgraded dump: a file (v1), a new directory of files (upgrade/request).
DESTINATIONS = {V1: DESTINATION, UR: "upgraded/acme-18"}
SECRET_NAMES = {V1: "key", UR: "token"}


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningEmulator]:
    with RunningEmulator(tmp_path_factory.mktemp("emulator"), process_seconds=0.3) as running:
        yield running


@dataclass
class Run:
    """One resource on the fake cluster, driven pass by pass."""

    cluster: FakeCluster
    emulator: RunningEmulator
    events: list[tuple[str, str, str]] = field(default_factory=list)
    waits: list[str] = field(default_factory=list)
    upgrade: Upgrade | None = None

    def handle(self) -> Upgrade:
        """A fresh handle, as a restarted operator would make (no memory of earlier passes)."""
        uid = self.cluster.upgrades[(NS, NAME)]["metadata"]["uid"]
        self.upgrade = Upgrade(
            self.cluster, NS, NAME, uid, lambda t, r, m: self.events.append((t, r, m))
        )
        return self.upgrade

    @property
    def status(self) -> dict[str, Any]:
        return self.cluster.status(NS, NAME)

    @property
    def reasons(self) -> list[str]:
        return [reason for _, reason, _ in self.events]

    def ready(self) -> dict[str, Any]:
        return next(c for c in self.status.get("conditions", []) if c["type"] == "Ready")

    async def step(self) -> Finished | None:
        """One pass; a poll interval has passed after it (the test does not wait for it)."""
        upgrade = self.upgrade or self.handle()
        try:
            result = await reconcile(upgrade)
        except Waiting as waiting:
            self.waits.append(str(waiting))
            return None
        await self.cluster.settle()
        status = self.cluster.upgrades.get((NS, NAME), {}).get("status", {})
        platform = status.get("platform")
        if platform and platform.get("lastCheckTime"):
            platform["lastCheckTime"] = "2000-01-01T00:00:00Z"
        if status.get("processRequestedAt"):  # the first poll waits an interval after it
            status["processRequestedAt"] = "2000-01-01T00:00:00Z"
        if upgrade.poll_due is not None:  # as the handle keeps it
            upgrade.poll_due = time.monotonic()
        return result if isinstance(result, Finished) else None

    async def until(self, done: Callable[[dict[str, Any]], bool], passes: int = 80) -> None:
        for _ in range(passes):
            if await self.step() is not None or done(self.status):
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"not reached after {passes} passes: {self.status}")

    async def to_the_end(self, passes: int = 120) -> dict[str, Any]:
        await self.until(lambda s: s.get("phase") in ("Succeeded", "Failed"), passes)
        return self.status


def spec_for(emulator: RunningEmulator, api: str = V1, **changes: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "target": "18.0",
        "email": "ops@acme.example",
        "contractSecretRef": {"name": "odoo-contract"},
        "source": {"claimName": "backups", "path": SOURCE},
        "destination": {"claimName": "backups", "path": DESTINATIONS[api], "format": "archive"},
        "transport": "https" if api == V1 else "rsync",
        "platform": {"url": emulator.url, "pollInterval": "5s", "api": api},
    }
    spec.update(changes)
    return spec


def tree(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def assert_delivered(run: Run, api: str, status: dict[str, Any]) -> None:
    """The platform's upgraded dump is on the volume as the API delivers it, and status says so:
    the file (v1); the whole set with a SHA256SUMS that checks (upgrade/request)."""
    request_id = status["requestId"]
    written = run.cluster.volume(NS, "backups") / DESTINATIONS[api]
    if api == V1:
        upgraded = run.emulator.upgraded_bytes(request_id)
        assert written.read_bytes() == upgraded
        assert status["download"]["sha256"] == hashlib.sha256(upgraded).hexdigest()
        return
    served = run.emulator.request_data(request_id)
    got = tree(written)
    sums = got.pop("SHA256SUMS")
    expected = {k: v for k, v in tree(served).items() if not k.startswith("origin.")}
    assert got == expected, sorted(set(got) ^ set(expected))
    assert {"upgrade-report.html", "upgrade.log"} <= set(got)
    assert any(name.startswith("upgraded.dump/") for name in got)
    check = subprocess.run(
        ["sha256sum", "--strict", "-c", "SHA256SUMS"], cwd=written, capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr
    download = status["download"]
    assert download["path"] == f"{DESTINATIONS[api]}/upgraded.dump"
    assert download["reportPath"] == f"{DESTINATIONS[api]}/upgrade-report.html"
    assert download["files"] == len(got)
    assert download["sha256"] == hashlib.sha256(sums).hexdigest()
    assert download["bytes"] == sum(len(data) for data in got.values())


@pytest.fixture
def allow(emulator: RunningEmulator) -> Iterator[Callable[..., None]]:
    def configure(*urls: str, **fields: Any) -> None:
        settings.configure(
            settings.OperatorSettings(
                allowed_platform_urls=urls or (emulator.url,),
                mover_retry_base_seconds=fields.pop("mover_retry_base_seconds", 0.2),
                **fields,
            )
        )

    configure()
    yield configure
    settings.configure(settings.OperatorSettings())


@pytest.fixture
def run(tmp_path: Path, emulator: RunningEmulator, allow: Callable[..., None]) -> Run:
    return Run(FakeCluster(tmp_path), emulator)


def prepare(run: Run, *, dump: bytes | None = None, spec: dict[str, Any] | None = None) -> bytes:
    """Contract Secret, PVC, a dump on it, the resource."""
    cluster = run.cluster
    cluster.add_secret(NS, "odoo-contract", {"contract": run.emulator.contract})
    volume = cluster.add_pvc(NS, "backups")
    data = dump if dump is not None else sample_dump_bytes(size=128 * 1024)
    (volume / SOURCE).parent.mkdir(parents=True, exist_ok=True)
    (volume / SOURCE).write_bytes(data)
    cluster.add_upgrade(NS, NAME, spec or spec_for(run.emulator))
    return data


def creates_of(emulator: RunningEmulator, before: int) -> int:
    return len(emulator.calls("create")) - before


# -- the whole flow -----------------------------------------------------------------------


def creates_for(emulator: RunningEmulator, api: str) -> int:
    return len(emulator.calls("create" if api == V1 else "upgrade/request/create"))


@pytest.mark.parametrize("api", APIS)
async def test_the_flow_creates_once_and_delivers_the_upgraded_dump(run: Run, api: str) -> None:
    before = creates_for(run.emulator, api)
    dump = prepare(run, spec=spec_for(run.emulator, api))
    status = await run.to_the_end()
    assert status["phase"] == "Succeeded", status
    request_id = status["requestId"]
    assert_delivered(run, api, status)
    assert status["upload"]["sha256"] == hashlib.sha256(dump).hexdigest()
    assert status["upload"]["transport"] == ("https" if api == V1 else "rsync")
    assert creates_for(run.emulator, api) - before == 1
    assert "createAttemptedAt" in status and status.get("moverRetries") is None
    # One claim holds source and destination: read once before `create`, once before the
    # download.
    assert run.cluster.calls.count("get_pvc") == 2
    order = [
        "Accepted",
        "RequestCreated",
        "UploadStarted",
        "Uploaded",
        "ProcessingRequested",
        "DownloadStarted",
        "Downloaded",
        "Succeeded",
    ]
    assert [r for r in run.reasons if r in order] == order
    secret = run.cluster.secret_values(NS, f"{NAME}-request")
    assert secret["requestId"] == str(request_id)
    # The request's secret is nowhere but its Secret: status, Events, Job specs, mover logs,
    # metrics.
    readable = {
        "status": repr(status),
        "events": repr(run.events),
        "jobs": json.dumps(list(run.cluster.jobs.values())),
        "mover logs": "\n".join(run.cluster.logs.values()),
        "metrics": generate_latest(metrics.REGISTRY).decode(),
    }
    private = secret.get("ssh-privatekey", "").splitlines()[1:2]
    for name, value in [
        ("request secret", secret[SECRET_NAMES[api]]),
        *[("key", k) for k in private],
    ]:
        assert len(value) > 16
        assert [place for place, text in readable.items() if value in text] == [], name


async def test_sftp_upload_is_granted_access_and_pins_the_host_key_its_mover_saw(run: Run) -> None:
    prepare(run, spec=spec_for(run.emulator, transport="sftp"))
    await run.until(
        lambda s: any(
            c["type"] == "Uploaded" and c["status"] == "True" for c in s.get("conditions", [])
        )
    )
    secret = run.cluster.secret_values(NS, f"{NAME}-request")
    assert {"ssh-privatekey", "ssh-publickey", "sftp-access"} <= set(secret)
    assert secret["sftp-host-key"] == run.emulator.host_key_line()
    assert run.status["upload"]["transport"] == "sftp"
    assert "SftpAccessGranted" in run.reasons and "SftpHostKeyRecorded" in run.reasons
    assert (await run.to_the_end())["phase"] == "Succeeded"


def download_args(run: Run) -> list[str]:
    job = run.cluster.jobs[(NS, f"{NAME}-download")]
    command: list[str] = job["spec"]["template"]["spec"]["containers"][0]["command"]
    return command


def calls_of(run: Run, request_id: int) -> list[str]:
    return [c["method"] for c in run.emulator.calls() if c["request"] == request_id]


SFTP_DOWNLOADS = {
    "sftp": {"transport": "sftp"},
    # auto: the dump (128 KiB) above the threshold went over SFTP, and comes back so.
    "auto-above-threshold": {"transport": "auto", "sftp": {"thresholdBytes": 1024}},
}


@pytest.mark.parametrize("case", SFTP_DOWNLOADS, ids=list(SFTP_DOWNLOADS))
async def test_sftp_download_is_granted_again_once_done_and_gets_the_upgraded_file(
    run: Run, case: str
) -> None:
    prepare(run, spec=spec_for(run.emulator, **SFTP_DOWNLOADS[case]))
    await run.until(lambda s: "startedAt" in s.get("download", {}))
    uploaded_with = dict(run.cluster.secret_values(NS, f"{NAME}-request"))
    status = await run.to_the_end()
    assert status["phase"] == "Succeeded", status
    assert_delivered(run, V1, status)
    request_id = status["requestId"]
    upgraded = run.emulator.upgraded_bytes(request_id)
    # Asked again once done (after `process`), with the key pair of the upload.
    calls = calls_of(run, request_id)
    assert calls.count("request_sftp_access") == 2
    assert calls.index("process") < len(calls) - 1 - calls[::-1].index("request_sftp_access")
    secret = run.cluster.secret_values(NS, f"{NAME}-request")
    assert json.loads(secret["sftp-download-access"])["sftp_user"] == f"user_{request_id}"
    for name in ("ssh-privatekey", "ssh-publickey", "sftp-access", "sftp-host-key"):
        assert secret[name] == uploaded_with[name], name
    assert "--transport" in (args := download_args(run))
    assert args[args.index("--transport") + 1] == "sftp"
    gets = [c for c in run.emulator.calls("sftp-get") if c["request"] == request_id]
    assert [(c["file"], c["bytes"]) for c in gets] == [("upgraded_acme.dump", len(upgraded))]
    assert status["upload"]["transport"] == status["download"]["transport"] == "sftp"
    assert "SftpDownloadAccessGranted" in run.reasons
    assert "over sftp" in next(m for _, r, m in run.events if r == "Downloaded")


HTTPS_DOWNLOADS = {
    "auto-below-threshold": {"transport": "auto"},  # 128 KiB under the default 1 GiB
    "sftp-sql": {  # SFTP serves the archive only: the SQL stream comes over HTTPS
        "transport": "sftp",
        "destination": {"claimName": "backups", "path": "upgraded/acme-18.sql", "format": "sql"},
    },
}


@pytest.mark.parametrize("case", HTTPS_DOWNLOADS, ids=list(HTTPS_DOWNLOADS))
async def test_download_stays_https_below_the_threshold_and_for_the_sql_stream(
    run: Run, case: str
) -> None:
    prepare(run, spec=spec_for(run.emulator, **HTTPS_DOWNLOADS[case]))
    status = await run.to_the_end()
    assert status["phase"] == "Succeeded", status
    request_id = status["requestId"]
    assert status["download"]["transport"] == "https"
    assert "--transport" not in download_args(run)
    assert calls_of(run, request_id).count("request_sftp_access") == 1  # the upload's only
    assert "sftp-download-access" not in run.cluster.secret_values(NS, f"{NAME}-request")
    assert [c for c in run.emulator.calls("sftp-get") if c["request"] == request_id] == []


async def test_a_pinned_host_key_that_does_not_match_fails_before_a_byte_is_sent(
    run: Run,
) -> None:
    stranger = " ".join(generate_ssh_keypair().public_line.split()[:2])
    prepare(run, spec=spec_for(run.emulator, transport="sftp", sftp={"hostKey": stranger}))
    status = await run.to_the_end()
    assert status["phase"] == "Failed"
    assert "host key" in run.ready()["message"].lower()
    assert not run.emulator.original_path(status["requestId"]).exists()
    assert run.cluster.secret_values(NS, f"{NAME}-request")["sftp-host-key"] == stranger


@pytest.mark.parametrize("api", APIS)
async def test_a_restarted_operator_adopts_a_finished_download_instead_of_downloading_again(
    run: Run, api: str
) -> None:
    prepare(run, spec=spec_for(run.emulator, api))
    run.cluster.hold.add(f"{NAME}-download")
    await run.until(lambda s: "startedAt" in s.get("download", {}))
    # The Job ends while no operator runs (the one that created it crashed before reading it).
    details = {"files": 4, "dumpPath": "upgraded.dump", "reportPath": "upgrade-report.html"}
    result = MoverResult(
        True,
        bytes=3,
        sha256="ab" * 32,
        attempts=1,
        transport="https" if api == V1 else "rsync",
        details=details if api == UR else {},
    )
    run.cluster.finish(NS, f"{NAME}-download", exit_code=0, message=json.dumps(result.to_json()))
    run.handle()
    status = await run.to_the_end()
    assert status["phase"] == "Succeeded"
    assert status["download"]["bytes"] == 3
    if api == UR:
        assert status["download"]["files"] == 4
        assert status["download"]["path"] == f"{DESTINATIONS[UR]}/upgraded.dump"
    assert run.cluster.calls.count("create_job") == 2  # upload and download, no second one


# -- platform states ------------------------------------------------------------------------


async def test_every_platform_state_is_mirrored_and_announced(
    tmp_path: Path, allow: Callable[..., None]
) -> None:
    with RunningEmulator(tmp_path / "slow-emulator", process_seconds=3) as slow:
        allow(slow.url)
        run = Run(FakeCluster(tmp_path / "cluster"), slow)
        prepare(run, spec=spec_for(slow))
        seen: list[str] = []

        def observe(status: dict[str, Any]) -> bool:
            state = status.get("platform", {}).get("state")
            if state and (not seen or seen[-1] != state):
                seen.append(state)
            return status.get("phase") == "Succeeded"

        await run.until(observe, passes=400)
    # `pending` lasts a fifth of the processing time: a pass may fall between its ends.
    assert [s for s in seen if s != "pending"] == ["processing", "testing", "done"], seen
    announced = [m for _, r, m in run.events if r == "PlatformState"]
    assert any("testing -> done" in m for m in announced), announced


async def test_polls_are_a_poll_interval_apart_however_long_a_pass_takes(
    tmp_path: Path, allow: Callable[..., None]
) -> None:
    # pollInterval runs from `process` to the first poll and from one poll's start to the
    # next: a pass woken early (a mover Job changed) does not poll, and a slow status answer
    # (a loaded platform or API server) does not stretch the interval by its own length.
    latency = 1.0
    with RunningEmulator(tmp_path / "slow", process_seconds=120, latency=latency) as slow:
        allow(slow.url)
        run = Run(FakeCluster(tmp_path / "cluster"), slow)
        prepare(run, spec=spec_for(slow))
        await run.until(lambda s: any(c["type"] == "Processed" for c in s.get("conditions", [])))
        assert run.status.get("platform", {}).get("state") is None  # not polled yet
        polled = len(slow.calls("status"))
        stored = run.cluster.upgrades[(NS, NAME)]["status"]
        stored["processRequestedAt"] = now_rfc3339()  # `process` was just asked (run.step aged it)

        early = await reconcile(run.handle())
        assert isinstance(early, Again) and 0 < early.after <= 5.0
        assert len(slow.calls("status")) == polled  # too early: no status call

        stored["processRequestedAt"] = "2000-01-01T00:00:00Z"  # the interval has passed
        result = await reconcile(run.handle())
        assert len(slow.calls("status")) == polled + 1
        assert isinstance(result, Again) and result.after <= 5.0 - latency + 0.05, result


async def test_the_first_poll_is_due_a_poll_interval_after_process_however_slow_the_api_server(
    run: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A loaded API server took seconds to take the status patch after `process`; the wait for
    the first poll started after it, and the first poll came that much late."""
    prepare(run)
    await run.until(
        lambda s: any(
            c["type"] == "Uploaded" and c["status"] == "True" for c in s.get("conditions", [])
        )
    )
    patch_latency = 1.0
    fast_patch = run.cluster.patch_upgrade_status

    async def slow_patch(namespace: str, name: str, status: Any) -> dict[str, Any]:
        await asyncio.sleep(patch_latency)
        return await fast_patch(namespace, name, status)

    monkeypatch.setattr(run.cluster, "patch_upgrade_status", slow_patch)
    processed = len(run.emulator.calls("process"))
    run.upgrade = run.handle()  # one handle for both passes, as the operator's daemon keeps
    result = await reconcile(run.upgrade)
    assert len(run.emulator.calls("process")) == processed + 1
    # Counted from the `process` call: the patch after it is inside the interval.
    assert isinstance(result, Again) and result.after <= 5.0 - patch_latency + 0.1, result
    # Woken early (a mover Job went away): the same poll is due, no sooner. The stored
    # `processRequestedAt` (whole seconds, written before the slow patches) made it seconds
    # sooner.
    polled = len(run.emulator.calls("status"))
    early = await reconcile(run.upgrade)
    assert len(run.emulator.calls("status")) == polled
    assert isinstance(early, Again) and early.after >= result.after - 0.2, (early, result)


async def test_delivered_after_skip_test_counts_as_upgraded(run: Run) -> None:
    prepare(run, spec=spec_for(run.emulator, aim="production"))
    await run.until(lambda s: s.get("platform", {}).get("state") in ("testing", "done"))
    stored = run.cluster.secret_values(NS, f"{NAME}-request")
    run.emulator.wait_for_state(int(stored["requestId"]), stored["key"], "testing", "done")
    run.emulator.api("skip_test", request=stored["requestId"], key=stored["key"])
    status = await run.to_the_end()
    assert status["phase"] == "Succeeded", status


@pytest.mark.parametrize(("api", "reason"), [(V1, "RequestInvalid"), (UR, "RequestFailed")])
async def test_a_refused_dump_fails_with_the_platforms_reason(
    run: Run, api: str, reason: str
) -> None:
    prepare(run, dump=b"this is not a database dump\n" * 4096, spec=spec_for(run.emulator, api))
    status = await run.to_the_end()
    assert status["phase"] == "Failed"
    assert run.ready()["reason"] == reason
    assert NOT_A_DUMP_MESSAGE in run.ready()["message"]
    processed = next(c for c in status["conditions"] if c["type"] == "Processed")
    assert processed["status"] == "False" and NOT_A_DUMP_MESSAGE in processed["message"]
    assert not (run.cluster.volume(NS, "backups") / DESTINATIONS[api]).exists()


# -- prerequisites and the allowlist --------------------------------------------------------


async def test_prerequisites_appearing_late_are_waited_for_without_a_platform_call(
    run: Run,
) -> None:
    before = len(run.emulator.calls())
    run.cluster.add_upgrade(NS, NAME, spec_for(run.emulator))
    await run.step()
    assert run.ready()["reason"] == "ContractSecretNotFound"
    run.cluster.add_secret(NS, "odoo-contract", {"contract": run.emulator.contract})
    await run.step()
    assert run.ready()["reason"] == "SourceClaimNotFound"
    assert len(run.emulator.calls()) == before  # nothing asked of the platform yet
    volume = run.cluster.add_pvc(NS, "backups")
    (volume / SOURCE).parent.mkdir(parents=True)
    (volume / SOURCE).write_bytes(sample_dump_bytes())
    assert (await run.to_the_end())["phase"] == "Succeeded"


async def test_a_missing_destination_claim_is_waited_for_naming_its_field(run: Run) -> None:
    before = len(run.emulator.calls())
    destination = {"claimName": "results", "path": DESTINATIONS[V1], "format": "archive"}
    prepare(run, spec=spec_for(run.emulator, destination=destination))
    await run.step()
    ready = run.ready()
    assert ready["status"] == "False" and ready["reason"] == "DestinationClaimNotFound"
    assert '"results" (spec.destination.claimName)' in ready["message"]
    assert len(run.emulator.calls()) == before
    run.cluster.add_pvc(NS, "results")
    assert (await run.to_the_end())["phase"] == "Succeeded"
    assert (run.cluster.volume(NS, "results") / DESTINATIONS[V1]).is_file()


async def test_a_mover_job_is_created_without_a_read_its_start_recorded_first(
    run: Run,
) -> None:
    prepare(run)
    # The start is recorded, then the create fails (an API server hiccup, or a crash
    # between the two): the next pass looks for the Job, finds none and creates it.
    run.cluster.fail_once("create_job", RuntimeError("etcdserver: request timed out"))
    with pytest.raises(RuntimeError, match="timed out"):
        await run.until(lambda s: False)  # the pass fails; the driver retries it
    assert "startedAt" in run.status["upload"]
    assert "get_job" not in run.cluster.calls and not run.cluster.jobs
    await run.step()
    assert run.cluster.calls.count("get_job") == 1 and run.cluster.calls.count("create_job") == 2
    status = await run.to_the_end()
    assert status["phase"] == "Succeeded", status
    uploads = [c for c in run.emulator.calls("upload") if c["request"] == status["requestId"]]
    assert len(uploads) == 1
    assert run.reasons.count("UploadStarted") == 1  # said once the Job exists


@pytest.mark.parametrize("api", APIS)
async def test_a_platform_url_not_allowed_is_never_contacted_nor_the_contract_read(
    run: Run, allow: Callable[..., None], api: str
) -> None:
    allow("https://upgrade.odoo.com")
    before = len(run.emulator.calls())
    prepare(run, spec=spec_for(run.emulator, api))
    for _ in range(3):
        await run.step()
    ready = run.ready()
    assert ready["reason"] == "PlatformUrlNotAllowed"
    assert run.emulator.url in ready["message"] and "--allowed-platform-url" in ready["message"]
    assert "get_secret" not in run.cluster.calls
    assert len(run.emulator.calls()) == before
    allow(run.emulator.url)  # an operator that allows it
    assert (await run.to_the_end())["phase"] == "Succeeded"


# -- create exactly once --------------------------------------------------------------------


@pytest.mark.parametrize("api", APIS)
async def test_an_intent_to_create_without_a_request_never_creates_again(
    run: Run, api: str
) -> None:
    before = len(run.emulator.calls())
    prepare(run, spec=spec_for(run.emulator, api))
    # A crash after the intent was recorded and before the answer was stored.
    await run.cluster.patch_upgrade_status(
        NS, NAME, {"phase": "Creating", "createAttemptedAt": "2026-01-01T00:00:00Z"}
    )
    status = await run.to_the_end()
    assert status["phase"] == "Failed"
    assert run.ready()["reason"] == "CreateOutcomeUnknown"
    assert "delete and re-apply" in run.ready()["message"]
    assert len(run.emulator.calls()) == before  # no create, nor any other call


@pytest.mark.parametrize(("api", "gateway_status"), [(V1, 502), (V1, 504), (UR, 502)])
async def test_a_create_answered_by_a_gateway_error_is_outcome_unknown(
    run: Run, allow: Callable[..., None], api: str, gateway_status: int
) -> None:
    before = creates_for(run.emulator, api)
    with PlatformFront(run.emulator.url) as front:
        allow(front.url)
        front.answer_create_with(gateway_status)
        platform = {"url": front.url, "pollInterval": "5s", "api": api}
        prepare(run, spec=spec_for(run.emulator, api, platform=platform))
        status = await run.to_the_end()
    assert status["phase"] == "Failed"
    assert run.ready()["reason"] == "CreateOutcomeUnknown"
    assert creates_for(run.emulator, api) - before == 1  # the platform acted once; never again


async def test_a_create_refused_with_503_is_retried_safely(
    run: Run, tmp_path: Path, allow: Callable[..., None]
) -> None:
    with RunningEmulator(tmp_path / "busy", process_seconds=0.3, fail_rate=1.0) as busy:
        allow(busy.url)
        run = Run(FakeCluster(tmp_path / "cluster"), busy)
        prepare(run, spec=spec_for(busy))
        with pytest.raises(PlatformError) as raised:
            await reconcile(run.handle())
        assert raised.value.transient
        assert "createAttemptedAt" not in run.status  # the platform said it did not act
        assert all(not c["ok"] for c in busy.calls("create"))


async def test_a_secret_write_failing_after_create_is_retried_and_shown(run: Run) -> None:
    before = len(run.emulator.calls("create"))
    prepare(run)
    run.cluster.fail_once("create_secret", RuntimeError("etcdserver: request timed out"))
    status = await run.to_the_end()
    assert status["phase"] == "Succeeded"
    assert creates_of(run.emulator, before) == 1


async def test_a_resource_deleted_while_its_request_is_stored_stops_the_retries(
    run: Run, caplog: pytest.LogCaptureFixture
) -> None:
    before = len(run.emulator.calls("create"))
    prepare(run)
    real_create = run.cluster.create_secret

    async def namespace_going_away(namespace: str, body: Any) -> dict[str, Any]:
        run.cluster.upgrades.pop((NS, NAME))
        raise RuntimeError("namespace odoo is being terminated")

    run.cluster.create_secret = namespace_going_away  # type: ignore[method-assign]
    with caplog.at_level(logging.ERROR):
        assert await run.step() is None  # returns instead of retrying for months
    run.cluster.create_secret = real_create  # type: ignore[method-assign]
    assert creates_of(run.emulator, before) == 1
    assert "stays on the platform" in caplog.text


async def test_process_is_asked_once_whether_the_crash_came_before_or_after_the_call(
    run: Run,
) -> None:
    prepare(run)
    uploaded = lambda s: any(  # noqa: E731
        c["type"] == "Uploaded" and c["status"] == "True" for c in s.get("conditions", [])
    )
    await run.until(uploaded)
    request_id = run.status["requestId"]

    def processes() -> int:
        return [c["request"] for c in run.emulator.calls("process")].count(request_id)

    # The intent was recorded, then the operator died before sending `process`.
    await run.cluster.patch_upgrade_status(NS, NAME, {"processRequestedAt": "2026-01-01T00:00:00Z"})
    await run.step()
    assert processes() == 1
    # The call got through, then the operator died before recording it: not asked again.
    conditions = [c for c in run.status["conditions"] if c["type"] != "Processed"]
    await run.cluster.patch_upgrade_status(NS, NAME, {"conditions": conditions})
    run.handle()
    assert (await run.to_the_end())["phase"] == "Succeeded"
    assert processes() == 1


# -- movers -----------------------------------------------------------------------------------


async def test_a_transient_mover_failure_is_retried_and_then_succeeds(run: Run) -> None:
    prepare(run)
    source = run.cluster.volume(NS, "backups") / SOURCE
    kept = source.read_bytes()
    source.unlink()
    await run.until(lambda s: s.get("moverRetries") == 1)
    uploaded = next(c for c in run.status["conditions"] if c["type"] == "Uploaded")
    assert uploaded["reason"] == "SourceNotFound" and "retry 1 of 10" in uploaded["message"]
    source.write_bytes(kept)
    status = await run.to_the_end()
    assert status["phase"] == "Succeeded", status
    assert run.cluster.calls.count("delete_job") >= 1


async def test_transient_failures_beyond_the_limit_fail_with_the_last_reason(
    run: Run, allow: Callable[..., None]
) -> None:
    allow(max_mover_retries=2)
    prepare(run)
    (run.cluster.volume(NS, "backups") / SOURCE).unlink()
    status = await run.to_the_end()
    assert status["phase"] == "Failed"
    assert run.ready()["reason"] == "SourceNotFound"
    assert "after 2 retries" in run.ready()["message"]


async def test_a_permanent_mover_failure_fails_at_once_with_the_platforms_failures(
    run: Run,
) -> None:
    prepare(run)
    run.cluster.hold.add(f"{NAME}-upload")
    await run.until(lambda s: "startedAt" in s.get("upload", {}))
    failure = MoverResult.failure(
        "PlatformFailure",
        "upload: STATE:INVALID: not draft",
        transient=False,
        failures=[{"reason": "STATE:INVALID", "message": "not draft"}],
    )
    run.cluster.finish(NS, f"{NAME}-upload", exit_code=2, message=json.dumps(failure.to_json()))
    status = await run.to_the_end()
    assert status["phase"] == "Failed"
    assert run.ready()["reason"] == "PlatformFailure"
    assert status["failures"] == [{"reason": "STATE:INVALID", "message": "not draft"}]
    assert status.get("moverRetries") is None


async def test_deleting_removes_the_resources_jobs_and_secret_and_nothing_else(run: Run) -> None:
    prepare(run)
    assert (await run.to_the_end())["phase"] == "Succeeded"
    upgrade = run.handle()
    owner = Owner(NAME, NS, upgrade.uid)
    ours = {name for (ns, name) in run.cluster.jobs if ns == NS}
    assert {f"{NAME}-upload", f"{NAME}-download"} <= ours
    request_secrets = {key for key in run.cluster.secrets if key != (NS, "odoo-contract")}
    assert request_secrets
    # A Job that carries the resource's uid label but belongs to another object stays.
    foreign = copy.deepcopy(run.cluster.jobs[(NS, f"{NAME}-upload")])
    foreign["metadata"].update(name="not-ours", ownerReferences=[{"uid": "another"}])
    run.cluster.jobs[(NS, "not-ours")] = foreign

    await delete_children(run.cluster, owner)

    assert [name for (ns, name) in run.cluster.jobs if ns == NS] == ["not-ours"]
    assert set(run.cluster.secrets) == {(NS, "odoo-contract")}  # the user's Secret stays


async def test_progress_comes_from_the_movers_log_and_a_stuck_pod_shows_why(run: Run) -> None:
    prepare(run)
    run.cluster.hold.add(f"{NAME}-upload")
    await run.until(lambda s: "startedAt" in s.get("upload", {}))
    run.cluster.set_running(
        NS, f"{NAME}-upload", "upload: 300 bytes over https\nupload: 150/300 bytes (50%)\n"
    )
    await run.step()
    assert run.status["progress"] == "50% (150 B/300 B)"
    assert run.status["upload"]["bytesDone"] == 150
    run.cluster.set_pod_status(
        NS,
        f"{NAME}-upload",
        {
            "phase": "Pending",
            "containerStatuses": [
                {
                    "name": "mover",
                    "state": {
                        "waiting": {
                            "reason": "ImagePullBackOff",
                            "message": "Back-off pulling image",
                        }
                    },
                }
            ],
        },
    )
    await run.step()
    uploaded = next(c for c in run.status["conditions"] if c["type"] == "Uploaded")
    assert uploaded["reason"] == "ImagePullBackOff" and "Back-off" in uploaded["message"]


async def test_a_job_owned_by_another_object_is_never_adopted(run: Run) -> None:
    prepare(run)
    run.cluster.jobs[(NS, f"{NAME}-upload")] = {
        "metadata": {
            "name": f"{NAME}-upload",
            "uid": "other",
            "ownerReferences": [{"uid": "someone-else"}],
        },
        "status": {},
    }
    await run.until(lambda s: s.get("requestId") is not None)
    await run.step()
    await run.step()
    assert run.ready()["reason"] == "JobConflict"
    assert run.cluster.jobs[(NS, f"{NAME}-upload")]["metadata"]["uid"] == "other"


# -- the way back ---------------------------------------------------------------------------


async def test_an_existing_destination_fails_and_a_spec_change_downloads_again(
    run: Run,
) -> None:
    before = len(run.emulator.calls("create"))
    prepare(run)
    taken = run.cluster.volume(NS, "backups") / DESTINATION
    taken.parent.mkdir(parents=True)
    taken.write_bytes(b"precious")
    status = await run.to_the_end()
    assert status["phase"] == "Failed" and run.ready()["reason"] == "DestinationExists"
    assert DESTINATION in run.ready()["message"] and taken.read_bytes() == b"precious"
    run.cluster.edit_spec(NS, NAME, {"destination": {"path": "upgraded/acme-18-b.dump"}})
    status = await run.to_the_end()
    assert status["phase"] == "Succeeded", status
    assert (taken.parent / "acme-18-b.dump").read_bytes() == run.emulator.upgraded_bytes(
        status["requestId"]
    )
    assert taken.read_bytes() == b"precious"
    assert creates_of(run.emulator, before) == 1


async def test_an_existing_destination_directory_is_never_written_into(run: Run) -> None:
    prepare(run, spec=spec_for(run.emulator, UR))
    taken = run.cluster.volume(NS, "backups") / DESTINATIONS[UR]
    taken.mkdir(parents=True)
    (taken / "mine.txt").write_bytes(b"precious")
    status = await run.to_the_end()
    assert status["phase"] == "Failed" and run.ready()["reason"] == "DestinationExists"
    assert "destination directory already exists" in run.ready()["message"]
    assert tree(taken) == {"mine.txt": b"precious"}
    assert sorted(p.name for p in taken.parent.iterdir()) == [taken.name]  # no part left
    run.cluster.edit_spec(NS, NAME, {"destination": {"path": "upgraded/acme-18-b"}})
    status = await run.to_the_end()
    assert status["phase"] == "Succeeded", status
    assert (taken.parent / "acme-18-b" / "SHA256SUMS").is_file()
    assert tree(taken) == {"mine.txt": b"precious"}


async def test_a_lost_request_secret_fails_the_upgrade(run: Run) -> None:
    prepare(run)
    await run.until(lambda s: s.get("requestId") is not None)
    run.cluster.secrets.pop((NS, f"{NAME}-request"))
    status = await run.to_the_end()
    assert status["phase"] == "Failed" and run.ready()["reason"] == "RequestSecretLost"


async def test_a_foreign_request_secret_is_never_read_or_written(run: Run) -> None:
    prepare(run)
    run.cluster.add_secret(NS, f"{NAME}-request", {"requestId": "1", "key": "not-ours-at-all"})
    await run.step()
    assert run.ready()["reason"] == "RequestSecretConflict"
    assert run.cluster.secret_values(NS, f"{NAME}-request") == {
        "requestId": "1",
        "key": "not-ours-at-all",
    }


# -- upgrade/request's own cases --------------------------------------------------------------


def request_calls(emulator: RunningEmulator, request_id: int) -> list[dict[str, Any]]:
    return [
        c
        for c in emulator.calls()
        if c["request"] == request_id
        and str(c["method"]).startswith(("upgrade/request/", "rsync-"))
    ]


async def test_every_call_after_create_goes_to_the_assigned_host(
    tmp_path: Path, allow: Callable[..., None]
) -> None:
    with RunningEmulator(tmp_path / "emulator", process_seconds=0.3) as emu:
        emu.restart(assigned_host=f"localhost:{emu.port}")  # same server, another name
        assigned = f"localhost:{emu.port}"
        allow(emu.url, f"http://{assigned}")
        run = Run(FakeCluster(tmp_path / "cluster"), emu)
        prepare(run, spec=spec_for(emu, UR))
        status = await run.to_the_end()
        assert status["phase"] == "Succeeded", status
        assert status["platform"]["assignedHost"] == assigned
        assert_delivered(run, UR, status)
        calls = [(c["method"], c.get("host")) for c in request_calls(emu, status["requestId"])]
    create, *later = [(m, h) for m, h in calls if m.startswith("upgrade/request/")]
    assert create == ("upgrade/request/create", f"127.0.0.1:{emu.port}")
    methods = {m for m, _ in later}
    assert {"transfer/start", "transfer/stop", "process", "status"} <= {
        m.removeprefix("upgrade/request/") for m in methods
    }
    assert {h for _, h in later} == {assigned}
    assert [m for m, _ in calls if m.startswith("rsync-")] == ["rsync-upload", "rsync-download"]
    secret = run.cluster.secret_values(NS, f"{NAME}-request")
    assert secret["assignedHost"] == assigned
    job = run.cluster.jobs[(NS, f"{NAME}-download")]
    args = job["spec"]["template"]["spec"]["containers"][0]["command"]
    assert args[args.index("--plain-http-host") + 1] == assigned


async def test_a_known_hosts_mismatch_is_refused_and_nothing_is_transferred(
    tmp_path: Path, allow: Callable[..., None]
) -> None:
    stranger = " ".join(generate_ssh_keypair().public_line.split()[:2])
    with RunningEmulator(tmp_path / "emulator", process_seconds=0.3) as emu:
        with PlatformFront(emu.url) as front:
            # Every call after create goes through the front, which forges transfer/start.
            emu.restart(assigned_host=f"127.0.0.1:{front.port}")
            front.forge_known_hosts = stranger
            allow(front.url)
            run = Run(FakeCluster(tmp_path / "cluster"), emu)
            platform = {"url": front.url, "pollInterval": "5s", "api": UR}
            prepare(run, spec=spec_for(emu, UR, platform=platform))
            status = await run.to_the_end()
        request_id = status["requestId"]
        assert status["phase"] == "Failed"
        ready = run.ready()
        assert "SSH host key" in ready["message"] and "nothing was transferred" in ready["message"]
        assert status.get("moverRetries") is None  # refused at once, not retried
        assert list(emu.request_data(request_id).iterdir()) == []
        methods = [c["method"] for c in request_calls(emu, request_id)]
    assert "rsync-upload" not in methods
    assert methods[-1] == "upgrade/request/transfer/stop"  # the window was closed all the same


async def test_a_cut_rsync_resumes_where_it_stopped(
    tmp_path: Path, allow: Callable[..., None]
) -> None:
    with RunningEmulator(
        tmp_path / "emulator", process_seconds=0.3, drop_after_bytes=1_000_000
    ) as emu:
        allow(emu.url)
        run = Run(FakeCluster(tmp_path / "cluster"), emu)
        dump = sample_dump_bytes("sql", size=4_000_000)
        prepare(run, dump=dump, spec=spec_for(emu, UR))
        status = await run.to_the_end()
        assert status["phase"] == "Succeeded", status
        assert status["upload"]["attempts"] == 2
        assert_delivered(run, UR, status)
        # One cut and one resumed session per direction (a cut one may log its end last).
        sessions = sorted(
            (c["method"], c["reasons"], c["ok"])
            for c in request_calls(emu, status["requestId"])
            if c["method"].startswith("rsync-")
        )
        resumed = [c for c in emu.calls("rsync-upload") if c["ok"]]
    assert sessions == [
        ("rsync-download", [], True),
        ("rsync-download", ["CONNECTION:CUT"], False),
        ("rsync-upload", [], True),
        ("rsync-upload", ["CONNECTION:CUT"], False),
    ]
    # The second run sent only what the first did not get through (plus checksums).
    assert int(resumed[0]["bytes_received"]) < len(dump) - 800_000


@pytest.mark.parametrize(
    ("marker", "reason", "said"),
    [
        ("ODOO_UPGRADE_EMULATOR_FAIL=module sale_loyalty broke", "RequestFailed", "sale_loyalty"),
        ("ODOO_UPGRADE_EMULATOR_CANCEL=1", "RequestCancelled", "Cancelled by the platform"),
    ],
    ids=["failed", "cancelled"],
)
async def test_failed_and_cancelled_requests_fail_with_the_platforms_reason(
    run: Run, marker: str, reason: str, said: str
) -> None:
    platform = {"url": run.emulator.url, "pollInterval": "5s", "api": UR, "env": [marker]}
    prepare(run, spec=spec_for(run.emulator, UR, platform=platform))
    status = await run.to_the_end()
    assert status["phase"] == "Failed"
    assert run.ready()["reason"] == reason and said in run.ready()["message"]
    processed = next(c for c in status["conditions"] if c["type"] == "Processed")
    assert processed["reason"] == reason and said in processed["message"]
    assert said in status["platform"]["reason"]
    assert status["platform"]["state"] == reason.removeprefix("Request").lower()
    assert ("Warning", reason) in [(t, r) for t, r, _ in run.events]
    assert "progress" not in status
    assert not (run.cluster.volume(NS, "backups") / DESTINATIONS[UR]).exists()


async def test_the_platforms_log_is_tailed_into_progress_while_it_works(
    tmp_path: Path, allow: Callable[..., None]
) -> None:
    with RunningEmulator(tmp_path / "slow-emulator", process_seconds=3) as slow:
        allow(slow.url)
        run = Run(FakeCluster(tmp_path / "cluster"), slow)
        env = ["ODOO_UPGRADE_EMULATOR_PG_INCOMPATIBLE=1"]
        platform = {"url": slow.url, "pollInterval": "5s", "api": UR, "env": env}
        prepare(run, spec=spec_for(slow, UR, platform=platform))
        states: list[str] = []
        shown: list[tuple[str, int]] = []

        def observe(status: dict[str, Any]) -> bool:
            state = status.get("platform", {}).get("state")
            if state and (not states or states[-1] != state):
                states.append(state)
            line, offset = status.get("progress"), status.get("platform", {}).get("logOffset")
            if state in ("pending", "progress") and line and (not shown or shown[-1][0] != line):
                shown.append((line, offset))
            return status.get("phase") == "Succeeded"

        await run.until(observe, passes=400)
        status = run.status
        whole_log = (
            run.cluster.volume(NS, "backups") / DESTINATIONS[UR] / "upgrade.log"
        ).read_text()
    assert [s for s in states if s != "pending"] == ["progress", "done"], states
    announced = [m for _, r, m in run.events if r == "PlatformState"]
    assert any("progress -> done" in m for m in announced), announced
    # A new last line of the platform's log on each poll, read on from a growing offset.
    assert len(shown) >= 3, shown
    # (The log is read just after the status call: on a loaded machine the platform may have
    # finished in between, so the last line shown may be its "done".)
    working = ("upgrading module", "restoring", "upgrade to 18.0 done")
    assert all(any(w in line for w in working) for line, _ in shown[1:]), shown
    offsets = [offset for _, offset in shown]
    assert offsets == sorted(offsets) and len(set(offsets)) == len(offsets)
    log_lines = whole_log.splitlines()
    for line, offset in shown:
        assert line in log_lines
        assert whole_log.encode()[:offset].decode().endswith(line + "\n")
    # process said the upgraded dump does not restore on the source's PostgreSQL.
    assert status["platform"]["pgVersionCompatible"] is False
    assert "PgVersionIncompatible" in run.reasons
    assert "progress" not in status
