"""Signed verdicts: the envelope of a decision, signed and recorded inside the change that
stores it.

A verdict is signed inside the change that charges the budget, so the envelope, its digest
on the budget's entry and the audit record holding it are stored in the write that stores
the decision, or not at all. Without a keyring the decision is still recorded in the audit
trail, by digest, unsigned.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from budgetops.apis.resources import RiskBudget, TrustBudget
from budgetops.engine.canonical import compact_json
from budgetops.engine.charges import TrustCharge
from budgetops.engine.decisions import Decision, Release
from budgetops.engine.verdicts import (
    RISK_PREDICATE,
    TRUST_PREDICATE,
    Subject,
    attest,
    risk_predicate,
    statement,
    trust_predicate,
    verdict_digest,
)

if TYPE_CHECKING:  # the signing code (and cryptography) loads with a keyring, not here
    from budgetops.crypto.dsse import Keyring


class Attestor:
    """Builds, signs and records the verdicts of charges: the webhook's and the CLI's."""

    def __init__(self, keyring: Keyring | None = None) -> None:
        self.keyring = keyring

    def _record(
        self,
        budget: RiskBudget | TrustBudget,
        document: dict[str, Any],
        *,
        account: str,
        key: str,
        ref: str,
        decision: Decision,
        now: datetime,
    ) -> None:
        """Sign the statement (when there is a keyring) and record it with the decision."""
        payload = compact_json(document)
        envelope = None
        if self.keyring is not None:
            envelope = self.keyring.sign(payload).to_json()
        attest(
            budget.status,
            at=now,
            account=account,
            key=key,
            ref=ref,
            decision=decision,
            digest=verdict_digest(payload),
            envelope=envelope,
        )

    def risk(
        self,
        budget: RiskBudget,
        *,
        release: Release,
        decision: Decision,
        subject: Subject,
        now: datetime,
    ) -> None:
        """Record the verdict on a release, whatever was decided."""
        predicate = risk_predicate(
            budget, release=release, decision=decision, subject=subject, now=now
        )
        self._record(
            budget,
            statement(subject, RISK_PREDICATE, predicate),
            account=budget.spec.service_id,
            key=release.key,
            ref=release.ref,
            decision=decision,
            now=now,
        )

    def trust(
        self,
        budget: TrustBudget,
        *,
        charge: TrustCharge,
        decision: Decision,
        subject: Subject,
        now: datetime,
    ) -> None:
        """Record the verdict on an issuance that was refused or passed by break-glass."""
        predicate = trust_predicate(
            budget,
            account=charge.account,
            cost=charge.cost,
            key=charge.key,
            decision=decision,
            subject=subject,
            now=now,
        )
        self._record(
            budget,
            statement(subject, TRUST_PREDICATE, predicate),
            account=charge.account,
            key=charge.key,
            ref=charge.ref,
            decision=decision,
            now=now,
        )
