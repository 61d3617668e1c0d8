"""A handler failure whose exception text holds a registered secret leaks it nowhere: not in the
operator's output (text or JSON logs, tracebacks included) and not in the Events kopf posts about
the failure. The operator runs as `odoo-upgrade operator` does, with one extra handler that fails
the way a careless handler would.

kopf posts its log lines as Events only with `settings.posting.loggers` (off by default since
kopf 1.44); the test turns it on, so that the Event path is exercised too."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import kopf
import pytest

from odoo_upgrade.redact import register_secret
from tests.harness.local_cluster import LocalCluster, wait_until
from tests.support.operator import RunningOperator
from tests.support.scenario import REPO_ROOT, Kube

pytestmark = pytest.mark.e2e

LEAKY_LABEL = "odoo-upgrade.test/leaky"
SECRET = "M987654-LeakedContract-31f9"  # what the test looks for


def register_leaky_handler() -> None:
    """A handler on labelled ConfigMaps that fails twice with the ConfigMap's secret in the
    exception text: first an ordinary exception (kopf logs it with its traceback and retries),
    then a permanent error (kopf logs its message)."""

    @kopf.on.startup()
    def post_log_lines_as_events(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.posting.loggers = True

    @kopf.on.create("", "v1", "configmaps", labels={LEAKY_LABEL: "true"}, id="leaky", backoff=1)
    def leak(body: kopf.Body, retry: int, **_: Any) -> None:
        secret = body["data"]["contract"]
        register_secret(secret)  # as the flow registers a contract it has read
        if retry == 0:
            raise RuntimeError(f"the platform refused contract {secret}")
        raise kopf.PermanentError(f"contract {secret} is not valid")


class LeakyOperator(RunningOperator):
    """`odoo-upgrade operator` with the leaky handler registered first."""

    def command(self) -> list[str]:
        code = (
            f"import sys; sys.path.insert(0, {str(REPO_ROOT)!r}); "
            "from tests.e2e.test_operator_redacts_kopf_failures import register_leaky_handler; "
            "register_leaky_handler(); "
            "from odoo_upgrade.cli import main; main()"
        )
        return [sys.executable, "-c", code, *super().command()[1:]]


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_a_failing_handler_leaks_its_secret_neither_to_logs_nor_to_events(
    cluster: LocalCluster, namespace: str, tmp_path: Path, log_format: str
) -> None:
    kube = Kube(Path(cluster.kubeconfig))
    operator = LeakyOperator(
        Path(cluster.kubeconfig),
        tmp_path / "operator.log",
        namespaces=[namespace],
        extra_args=["--json-logs"] if log_format == "json" else [],
    )
    operator.start()
    try:
        kube.apply(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {
                    "name": "leaky",
                    "namespace": namespace,
                    "labels": {LEAKY_LABEL: "true"},
                },
                "data": {"contract": SECRET},
            }
        )

        def failure_events() -> list[dict[str, Any]]:
            events = kube.json("get", "events", "-n", namespace).get("items", [])
            return [e for e in events if e["involvedObject"].get("name") == "leaky"]

        # kopf posts both failures as Events: the retried one and the permanent one.
        try:
            wait_until(
                lambda: (
                    any("failed with an exception" in e["message"] for e in failure_events())
                    and any("failed permanently" in e["message"] for e in failure_events())
                ),
                timeout=60,
                what="kopf's Events about both handler failures",
            )
        except AssertionError as error:
            raise AssertionError(
                f"{error}\nevents: {failure_events()}\n{operator.log_tail()}"
            ) from None
        wait_until(
            lambda: "failed permanently" in operator.logs(),
            timeout=30,
            what="kopf's log line about the permanent failure",
        )
    finally:
        operator.stop()

    events = failure_events()
    output = operator.logs()
    assert SECRET not in output, "the secret reached the operator's output"
    for event in events:
        assert SECRET not in json.dumps(event), f"the secret reached an Event: {event}"
    # Redacted, not dropped: the failure and its traceback are still there to read.
    assert any("contract *** is not valid" in e["message"] for e in events)
    assert "RuntimeError: the platform refused contract ***" in output
    if log_format == "json":
        records = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
        retried = [r for r in records if "failed with an exception" in r.get("message", "")]
        assert retried and "RuntimeError" in retried[0]["exc_info"]
