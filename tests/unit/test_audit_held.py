"""A command's audit records, held in the budget's status until the operator publishes them.

`kubectl budget consume` seals its records into the chain but cannot publish them where the
operator's trail is; before, they went to that user's stderr and the operator's log showed
the chain broken. Now they stay in `status.auditHeld`, written in the command's own
compare-and-swap, and the operator's next write of that budget publishes them first.
"""

from __future__ import annotations

import pytest

from budgetops.apis.ledger import HELD_AUDIT_MAX
from budgetops.apis.resources import BudgetKey, RiskBudget
from budgetops.cli.attestation import envelope_check
from budgetops.crypto import dsse
from budgetops.engine import audit
from budgetops.store.audit import AuditTrail, Checkpoints

from .test_admission import NOW
from .test_decisions import risk_budget


def _moved(budget: RiskBudget, key: str) -> None:
    audit.note(budget.status, at=NOW, action="reserve", account="payments-api", key=key)


def test_held_records_reach_the_operators_trail_in_order_with_a_signed_head() -> None:
    keyring = dsse.Keyring.from_files(dsse.Keyring.new("k1", "ed25519"))
    operator = AuditTrail(checkpoints=Checkpoints.by(keyring))
    command = AuditTrail(hold=True)  # may not read the keyring
    budget = risk_budget()
    key = BudgetKey.of(budget)
    _moved(budget, "before")
    published = operator.seal(key, budget)
    _moved(budget, "by-the-command")
    by_command = command.seal(key, budget)
    assert len(budget.status.audit_held) == len(by_command) == 1
    assert budget.status.audit_head.signature is None  # the command could not sign it
    assert RiskBudget.model_validate(budget.to_wire()).status.audit_held  # reads back

    drained = operator.seal(key, budget)  # the operator's next write, nothing of its own
    assert budget.status.audit_held == []
    assert [s.record["key"] for s in drained] == ["by-the-command"]
    assert drained[-1].head  # the head it leaves, signed by the operator
    lines = [line for s in [*published, *drained] for line in (s.line, s.head) if line]
    report = audit.verify_chain(
        lines,
        heads={str(key): ("", budget.status.audit_head)},
        check=envelope_check(list(keyring.verifiers.values())),
    )
    assert report.ok, report.problems


def test_a_command_is_refused_once_too_many_records_wait_for_the_operator() -> None:
    budget = risk_budget()
    budget.status.audit_held = ["{}"] * HELD_AUDIT_MAX
    _moved(budget, "one-too-many")
    with pytest.raises(ValueError, match="wait for the operator"):
        AuditTrail(hold=True).seal(BudgetKey.of(budget), budget)


@pytest.mark.parametrize("own_records", [False, True])
def test_held_records_edited_after_the_command_are_never_signed_over(own_records: bool) -> None:
    """Whoever may write the status could edit held lines; the operator signs no head over
    them, whether its own write adds records or not (before, it checked only without)."""
    keyring = dsse.Keyring.from_files(dsse.Keyring.new("k1", "ed25519"))
    operator = AuditTrail(checkpoints=Checkpoints.by(keyring))
    budget = risk_budget()
    key = BudgetKey.of(budget)
    _moved(budget, "before")
    operator.seal(key, budget)
    _moved(budget, "by-the-command")
    AuditTrail(hold=True).seal(key, budget)
    budget.status.audit_held[0] = budget.status.audit_held[0].replace(
        "by-the-command", "someone-else"
    )
    if own_records:
        _moved(budget, "the-operators-own")
    operator.seal(key, budget)
    assert budget.status.audit_head.signature is None
