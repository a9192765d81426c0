"""Verdicts: what a budget decided about one object, as an in-toto Statement. Pure.

Every RiskBudget decision and every TrustBudget denial or break-glass use gets one: the
subject (the object, its content digest and its images' digests), the budget check in the
shape the attestation seed describes (environment, the configuration applied and its
`configHash`, the counts, `pass` / `warn` / `fail`, violations) and the ledger movement. The
admission layer signs the statement (a DSSE envelope) and records it with `attest`, in the
same write as the charge it speaks of.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from budgetops.apis.common import format_amount, format_time
from budgetops.apis.ledger import ENTRIES_KEPT, Entry, Ledger
from budgetops.apis.resources import RiskBudget, TrustBudget
from budgetops.apis.riskbudget import RiskBudgetSpec
from budgetops.apis.trustbudget import TrustBudgetSpec
from budgetops.engine.audit import note
from budgetops.engine.canonical import compact_json, config_hash
from budgetops.engine.decisions import Decision, Release
from budgetops.engine.unknowns import UnknownCounts, unknowns_config

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
RISK_PREDICATE = "https://budgetops.dev/predicates/risk-verdict/v1"
TRUST_PREDICATE = "https://budgetops.dev/predicates/trust-verdict/v1"

CheckResult = Literal["pass", "warn", "fail"]


@dataclass(frozen=True)
class Subject:
    """The object a verdict is about, as admission saw it.

    `digest` is the hex SHA-256 of the content that was judged (a workload's pod template,
    another object's spec); `images` are the image references it runs, of which those
    pinned by digest become subjects of the statement too.
    """

    kind: str
    resource: str
    namespace: str
    name: str
    uid: str
    digest: str
    release_id: str = ""
    images: tuple[str, ...] = ()

    @property
    def path(self) -> str:
        """`apps/deployments/payments/api`: what names the object among a statement's subjects."""
        where = f"{self.namespace}/" if self.namespace else ""
        return f"{self.resource}/{where}{self.name}"

    def to_predicate(self) -> dict[str, Any]:
        described: dict[str, Any] = {
            "kind": self.kind,
            "namespace": self.namespace,
            "name": self.name,
            "uid": self.uid,
        }
        if self.release_id:
            described["releaseId"] = self.release_id
        if self.images:
            described["images"] = list(self.images)
        return described

    def statement_subjects(self) -> list[dict[str, Any]]:
        subjects = [{"name": self.path, "digest": {"sha256": self.digest}}]
        for image in self.images:
            name, _, pinned = image.partition("@sha256:")
            if pinned:
                subjects.append({"name": name, "digest": {"sha256": pinned}})
        return subjects


def content_digest(content: object) -> str:
    """Hex SHA-256 of content as compact sorted JSON (a float in it as Python prints it)."""
    return hashlib.sha256(compact_json(content)).hexdigest()


def risk_config(spec: RiskBudgetSpec, allocation: Decimal | None = None) -> dict[str, Any]:
    """The configuration a RiskBudget decision applies, exactly as its hash covers it. The
    window's `allocation`, when it is not the spec's (earned capacity, `budgetops adjust`),
    is applied too, so it is attested as `appliedAllocation`; left out otherwise, so the
    hash of an unadjusted budget's configuration stays what it always was."""
    config = {
        "serviceId": spec.service_id,
        "allocation": spec.base_allocation(),
        "window": spec.window.to_wire(),
        "carryOver": spec.carry_over,
        "thresholds": spec.thresholds.to_wire(),
        "bands": spec.bands.to_wire(),
        "unknowns": None if spec.unknowns is None else unknowns_config(spec.unknowns),
        "enforcement": spec.enforcement,
    }
    if allocation is not None and allocation != spec.base_allocation():
        config["appliedAllocation"] = allocation
    return config


def trust_config(spec: TrustBudgetSpec) -> dict[str, Any]:
    """The configuration a TrustBudget decision applies: its spec without where alerts and
    notifications go, which decide nothing."""
    applied = spec.to_wire()
    for ignored in ("alerts", "notifications", "environment"):
        applied.pop(ignored, None)
    return applied


_APPLIED: dict[tuple[str, ...], tuple[dict[str, Any], str]] = {}
APPLIED_KEPT = 1024


def _allocation(budget: RiskBudget | TrustBudget) -> Decimal | None:
    """A RiskBudget's allocation as applied now: its service account's, once it has one."""
    if not isinstance(budget, RiskBudget):
        return None
    account = budget.status.accounts.get(budget.spec.service_id)
    return None if account is None else account.allocation


def applied(budget: RiskBudget | TrustBudget) -> tuple[dict[str, Any], str]:
    """A budget's applied configuration and its hash, computed once per spec and applied
    allocation: the canonical encoder is exact, not fast, and both rarely change. A stored
    budget's spec is known by its uid and generation (which every spec change raises); one
    never stored (a test's) by its JSON."""
    spec, meta = budget.spec, budget.metadata
    allocation = _allocation(budget)
    if meta.uid and meta.generation is not None:
        known = f"{meta.namespace}/{meta.name}/{meta.uid}/{meta.generation}"
    else:
        known = spec.model_dump_json()
    # The tier table can change under the same spec: the allocation it gives is in the key.
    base = spec.base_allocation() if isinstance(spec, RiskBudgetSpec) else None
    key = (budget.kind, known, str(allocation), str(base))
    found = _APPLIED.get(key)
    if found is None:
        config = (
            risk_config(spec, allocation)
            if isinstance(spec, RiskBudgetSpec)
            else trust_config(spec)
        )
        if len(_APPLIED) >= APPLIED_KEPT:
            _APPLIED.clear()
        found = _APPLIED[key] = (config, config_hash(config))
    return found


def _result(decision: Decision) -> CheckResult:
    """`fail` when denied; `warn` when admitted past a limit, an unknowns limit whose
    action is warn included; else `pass`."""
    if not decision.allowed:
        return "fail"
    check = decision.seen.check if decision.seen is not None else None
    if check is not None and check.result == "warn":
        return "warn"
    return (
        "warn"
        if decision.reason in ("Warned", "Uncovered", "BreakGlass", "ReleaseReused")
        else "pass"
    )


def _budget(budget: RiskBudget | TrustBudget) -> dict[str, Any]:
    meta = budget.metadata
    described: dict[str, Any] = {"kind": budget.kind, "name": meta.name}
    if meta.namespace:
        described["namespace"] = meta.namespace
    if meta.uid:
        described["uid"] = meta.uid
    if meta.generation is not None:
        described["generation"] = meta.generation
    return described


def _decision(decision: Decision) -> dict[str, Any]:
    return {
        "allowed": decision.allowed,
        "reason": decision.reason,
        "message": decision.message,
        "warnings": list(decision.warnings),
    }


def _movement(
    budget: RiskBudget | TrustBudget, account: str, decision: Decision, key: str
) -> dict[str, Any]:
    """What the decision moved in the ledger: a reservation of `amount`, or nothing."""
    target = budget.status.accounts[account]
    before = decision.seen.balance if decision.seen is not None else target.balance
    return {
        "account": account,
        "action": "reserve" if decision.cost > 0 else "none",
        "amount": format_amount(decision.cost),
        "key": key,
        "balanceBefore": format_amount(before),
        "balanceAfter": format_amount(target.balance),
        "allocation": format_amount(target.allocation),
    }


def risk_predicate(
    budget: RiskBudget, *, release: Release, decision: Decision, subject: Subject, now: datetime
) -> dict[str, Any]:
    """The verdict on one release: its budget check, decision and ledger movement."""
    spec, status = budget.spec, budget.status
    config, hashed = applied(budget)
    seen = decision.seen
    check = seen.check if seen is not None else None
    violations = [v.to_predicate() for v in check.violations] if check is not None else []
    if seen is not None and release.change_class not in spec.bands.allows(seen.band or "Green"):
        violations.append(
            {
                "type": "band",
                "band": seen.band,
                "changeClass": release.change_class,
                "allowed": list(spec.bands.allows(seen.band or "Green")),
            }
        )
    if seen is not None and release.points > seen.balance:
        violations.append(
            {
                "type": "points",
                "limit": format_amount(seen.balance),
                "actual": release.points,
            }
        )
    window = status.window
    return {
        "budget": _budget(budget),
        "subject": subject.to_predicate(),
        "decision": _decision(decision),
        "budgetCheck": {
            "environment": spec.environment or budget.metadata.namespace or "",
            "config": config,
            "actualCounts": (release.unknowns or UnknownCounts()).to_predicate(),
            "result": _result(decision),
            "configHash": hashed,
            "evaluatedAt": format_time(now),
            "violations": violations,
        },
        "release": {
            "key": release.key,
            "points": release.points,
            "changeClass": release.change_class,
            **(
                {"vulnerabilities": release.vulnerabilities.to_predicate()}
                if release.vulnerabilities is not None
                else {}
            ),
        },
        "ledger": {
            **_movement(budget, spec.service_id, decision, release.key),
            "window": window.key if window is not None else "",
            "bandBefore": seen.band if seen is not None else status.band,
            "bandAfter": status.band,
        },
    }


def trust_predicate(
    budget: TrustBudget,
    *,
    account: str,
    cost: Decimal,
    key: str,
    decision: Decision,
    subject: Subject,
    now: datetime,
) -> dict[str, Any]:
    """The verdict on one issuance a TrustBudget refused or let through by break-glass."""
    spec = budget.spec
    config, hashed = applied(budget)
    seen = decision.seen
    balance = seen.balance if seen is not None else budget.status.accounts[account].balance
    violations = []
    if cost > balance:
        violations.append(
            {"type": "balance", "limit": format_amount(balance), "actual": format_amount(cost)}
        )
    return {
        "budget": _budget(budget),
        "subject": subject.to_predicate(),
        "decision": _decision(decision),
        "budgetCheck": {
            "environment": spec.environment,
            "config": config,
            "actualCounts": {"cost": format_amount(cost), "unit": spec.unit},
            "result": _result(decision),
            "configHash": hashed,
            "evaluatedAt": format_time(now),
            "violations": violations,
        },
        "ledger": _movement(budget, account, decision, key),
    }


def statement(subject: Subject, predicate_type: str, predicate: dict[str, Any]) -> dict[str, Any]:
    """The in-toto Statement (v1) around a predicate."""
    return {
        "_type": STATEMENT_TYPE,
        "subject": subject.statement_subjects(),
        "predicateType": predicate_type,
        "predicate": predicate,
    }


def verdict_digest(payload: bytes) -> str:
    """How a verdict is named: the SHA-256 of the statement bytes its envelope signs."""
    return "sha256:" + hashlib.sha256(payload).hexdigest()


def attest(
    ledger: Ledger,
    *,
    at: datetime,
    account: str,
    key: str,
    ref: str,
    decision: Decision,
    digest: str,
    envelope: dict[str, Any] | None,
) -> None:
    """Record a verdict: its digest on the decision's entry (a denial gets one of its own)
    and its envelope (None: unsigned) in the audit trail, both in the write that stores the
    decision."""
    last = ledger.entries[-1] if ledger.entries else None
    if decision.allowed and last is not None and last.key == key and last.action == "reserve":
        # A new entry, not the old one changed: a store may hold each entry's encoding by
        # identity (store.rows.Parts: entries are added and dropped, never changed).
        ledger.entries[-1] = dataclasses.replace(last, verdict=digest)
    else:
        ledger.entries.append(
            Entry(
                at=at,
                account=account,
                action="break-glass" if decision.reason == "BreakGlass" else "deny",
                amount=decision.cost,
                key=key,
                object=ref,
                verdict=digest,
            )
        )
        del ledger.entries[:-ENTRIES_KEPT]
    note(
        ledger,
        at=at,
        action="decision",
        account=account,
        key=key,
        ref=ref,
        detail={
            "allowed": decision.allowed,
            "reason": decision.reason,
            "verdict": digest,
            **({"envelope": envelope} if envelope is not None else {}),
        },
    )
