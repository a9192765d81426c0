"""Signed verdicts at admission: the subject of a request, and the envelope of a decision.

A verdict is signed inside the change that charges the budget, so the envelope, its digest
on the budget's entry and the audit record holding it are stored in the write that stores
the decision, or not at all. Without a keyring the decision is still recorded in the audit
trail, by digest, unsigned.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from budgetops.admission.classify import WORKLOADS, TrustCharge
from budgetops.admission.review import AdmissionRequest
from budgetops.apis.resources import RiskBudget, TrustBudget
from budgetops.crypto import dsse
from budgetops.engine.canonical import compact_json
from budgetops.engine.decisions import Decision, Release
from budgetops.engine.verdicts import (
    RISK_PREDICATE,
    TRUST_PREDICATE,
    Subject,
    attest,
    content_digest,
    risk_predicate,
    statement,
    trust_predicate,
    verdict_digest,
)

IMAGES_KEPT = 32
"""Images named in a verdict at most (a pod runs a handful)."""


def _images(template: Any) -> tuple[str, ...]:
    spec = template.get("spec") if isinstance(template, dict) else None
    if not isinstance(spec, dict):
        return ()
    found = []
    for field in ("initContainers", "containers"):
        containers = spec.get(field)
        for container in containers if isinstance(containers, list) else []:
            image = container.get("image") if isinstance(container, dict) else None
            if isinstance(image, str) and image and image not in found:
                found.append(image[:512])
    return tuple(found[:IMAGES_KEPT])


def subject_of(request: AdmissionRequest, release_key: str = "") -> Subject:
    """The object as admitted: a workload by its pod template (which is what a release
    changes), anything else by its spec."""
    gvr = request.resource
    path = WORKLOADS.get((gvr.group, gvr.resource))
    node: Any = request.object or {}
    for part in path or ("spec",):
        node = node.get(part) if isinstance(node, dict) else None
    meta = request.metadata()
    name = request.name or meta.get("name") or meta.get("generateName") or ""
    return Subject(
        kind=request.kind.kind,
        resource=f"{gvr.group}/{gvr.resource}" if gvr.group else gvr.resource,
        namespace=request.namespace,
        name=str(name),
        uid=request.object_uid(),
        digest=content_digest(node),
        release_id=release_key.removeprefix("release:")
        if release_key.startswith("release:")
        else "",
        images=_images(node) if path else (),
    )


class Attestor:
    """Builds, signs and records the verdicts of one webhook's decisions."""

    def __init__(self, keyring: dsse.Keyring | None = None) -> None:
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
            envelope = dsse.sign(payload, self.keyring.active).to_json()
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
