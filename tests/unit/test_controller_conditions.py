"""metav1.Condition semantics: lastTransitionTime moves only when the status flips."""

from __future__ import annotations

import pytest

from odoo_upgrade.controller import conditions as cond


def test_a_new_condition_gets_all_fields() -> None:
    out = cond.set_condition([], cond.UPLOADED, cond.UNKNOWN, "Uploading", "started",
                             generation=3, now="2026-01-01T00:00:00Z")  # fmt: skip
    assert out == [
        {
            "type": "Uploaded",
            "status": "Unknown",
            "reason": "Uploading",
            "message": "started",
            "lastTransitionTime": "2026-01-01T00:00:00Z",
            "observedGeneration": 3,
        }
    ]


def test_same_status_keeps_the_transition_time_but_updates_reason_and_message() -> None:
    first = cond.set_condition([], cond.READY, cond.FALSE, "SourceClaimNotFound", "a",
                               generation=1, now="2026-01-01T00:00:00Z")  # fmt: skip
    second = cond.set_condition(first, cond.READY, cond.FALSE, "ContractSecretNotFound", "b",
                                generation=2, now="2026-01-01T01:00:00Z")  # fmt: skip
    assert second[0]["lastTransitionTime"] == "2026-01-01T00:00:00Z"
    assert (second[0]["reason"], second[0]["message"]) == ("ContractSecretNotFound", "b")
    assert second[0]["observedGeneration"] == 2


def test_a_flip_moves_the_transition_time() -> None:
    first = cond.set_condition([], cond.READY, cond.FALSE, "X", "a", generation=1,
                               now="2026-01-01T00:00:00Z")  # fmt: skip
    second = cond.set_condition(first, cond.READY, cond.TRUE, "Succeeded", "b", generation=1,
                                now="2026-01-01T01:00:00Z")  # fmt: skip
    assert second[0]["lastTransitionTime"] == "2026-01-01T01:00:00Z"


def test_conditions_stay_in_flow_order_and_others_are_untouched() -> None:
    out: list[dict[str, object]] = []
    for type_ in reversed(cond.CONDITION_TYPES):
        out = cond.set_condition(out, type_, cond.TRUE, "R", "m", generation=None, now="t")
    assert [c["type"] for c in out] == list(cond.CONDITION_TYPES)
    assert all("observedGeneration" not in c for c in out)
    assert cond.is_true(out, cond.UPLOADED)


def test_status_must_be_true_false_or_unknown() -> None:
    with pytest.raises(ValueError, match="True, False or Unknown"):
        cond.set_condition([], cond.READY, "yes", "R", "m", generation=None)
