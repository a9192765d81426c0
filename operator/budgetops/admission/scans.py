"""Risk points from the cluster's VulnerabilityReports, for the RiskBudgets that take them
(`spec.release.riskPointsFrom: TrivyOperator`).

A release is priced by them when it changes its images (a create, or an update whose pod
template runs other images than before): the new images' reports against those of the
images it ran before. Another template change (an environment variable, a label) keeps
its declared points, as it brings no new vulnerabilities. The reports are read once per
request, through the VulnerabilityReports port, off the event loop and within a short
timeout; what `engine.vulnerabilityreports` makes of them is pure.

When they cannot be read, a budget's `failMode` decides: `failClosed` (the default)
refuses the request, saying so, and charges nothing; `failOpen` charges the declared
points and says that it did.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from functools import partial
from typing import Any, Protocol

from budgetops.admission.attest import IMAGE_MAX, IMAGES_KEPT, images_of
from budgetops.admission.classify import WORKLOADS, Classified, Refused, RiskCharge
from budgetops.admission.review import AdmissionRequest
from budgetops.apis.resources import Budget, BudgetKey, RiskBudget
from budgetops.engine.vulnerabilityreports import (
    ClusterReport,
    ClusterScan,
    Input,
    ReportsUnavailable,
    scan_release,
)

REPORTS_TIMEOUT = 2.0
"""Seconds the reports may take to read, at most: admission waits for them."""
ANSWER_ROOM = 1.0
"""Seconds kept from the request's deadline for the charge after the reports are read."""


class VulnerabilityReports(Protocol):
    """Where a namespace's VulnerabilityReports are read from (the adapter in a cluster)."""

    def read(self, namespace: str, *, timeout: float) -> list[ClusterReport]:
        """ReportsUnavailable when they cannot all be read within `timeout` seconds."""
        ...


@dataclass(frozen=True)
class Shipped:
    """The images a release runs, and those its workload ran before (None: created)."""

    new: tuple[str, ...]
    old: tuple[str, ...] | None


def _images(document: dict[str, Any] | None, path: tuple[str, ...]) -> tuple[str, ...]:
    """Every image of the pod template, exactly as written: a verdict's subject may keep the
    first IMAGES_KEPT, cut to IMAGE_MAX, but a price taken from fewer images, or from a
    reference cut short (another reference), could be had by padding the template."""
    node: Any = document
    for part in path:
        node = node.get(part) if isinstance(node, dict) else None
    found = images_of(node, kept=None, cut=None)
    if len(found) > IMAGES_KEPT or any(len(image) > IMAGE_MAX for image in found):
        raise Refused(
            f"a pod template priced from VulnerabilityReports may run at most {IMAGES_KEPT} "
            f"images, each named in at most {IMAGE_MAX} characters. Nothing was charged."
        )
    return found


def shipped(request: AdmissionRequest) -> Shipped | None:
    """The images of a workload created, or updated to run other images; else None."""
    path = WORKLOADS.get((request.resource.group, request.resource.resource))
    if path is None:
        return None
    new = _images(request.object, path)
    if request.operation == "CREATE":
        return Shipped(new, None)
    old = _images(request.old_object, path)
    return None if set(new) == set(old) else Shipped(new, old)


def wanting(budgets: Iterable[Budget], charges: Classified) -> dict[BudgetKey, RiskBudget]:
    """The charged RiskBudgets whose release points come from VulnerabilityReports."""
    charged = {charge.budget for charge in charges.risk}
    return {
        BudgetKey.of(b): b
        for b in budgets
        if isinstance(b, RiskBudget)
        and b.spec.release.risk_points_from == "TrivyOperator"
        and BudgetKey.of(b) in charged
    }


def _scan(
    charge: RiskCharge,
    budget: RiskBudget,
    images: Shipped,
    reports: list[ClusterReport] | ReportsUnavailable,
) -> ClusterScan:
    declared = charge.release.points
    if not isinstance(reports, ReportsUnavailable):
        weights = budget.spec.vulnerability_points
        return scan_release(images.new, images.old, reports, weights, declared=declared)
    if not charge.fail_open:
        raise Refused(
            f"{charge.budget}: its risk points come from VulnerabilityReports, which could "
            f"not be read ({reports}). Nothing was charged; please try again (a failOpen "
            "budget charges the declared points instead)."
        )
    unread = tuple(Input("report", image, missing=f"unreadable: {reports}") for image in images.new)
    return ClusterScan((), unread, None, declared)


def priced(
    charges: Classified,
    budgets: dict[BudgetKey, RiskBudget],
    images: Shipped,
    reports: list[ClusterReport] | ReportsUnavailable,
) -> tuple[Classified, list[str]]:
    """`charges` with the releases `budgets` pay for priced by `reports`, and the warning
    that says how each was priced. Refused when a failClosed budget's reports could not
    be read."""
    risk: list[RiskCharge] = []
    notes: list[str] = []
    for charge in charges.risk:
        budget = budgets.get(charge.budget)
        if budget is None:
            risk.append(charge)
            continue
        scan = _scan(charge, budget, images, reports)
        notes.append(scan.note(budget.spec.service_id))
        release = replace(charge.release, points=scan.points, vulnerabilities=scan)
        risk.append(replace(charge, release=release))
    return replace(charges, risk=risk), notes


async def price(
    source: VulnerabilityReports | None,
    budgets: Iterable[Budget],
    charges: Classified,
    request: AdmissionRequest,
    deadline: float,
) -> tuple[Classified, list[str]]:
    """`priced`, the namespace's reports read (off the event loop) only when a budget
    charged for this request takes its points from them and the images changed. A
    server with no cluster to read them from (`source` None) reads them as unavailable."""
    paying = wanting(budgets, charges)
    if not paying:
        return charges, []
    images = shipped(request)
    if images is None:
        return charges, []
    reports: list[ClusterReport] | ReportsUnavailable
    timeout = min(REPORTS_TIMEOUT, deadline - time.monotonic() - ANSWER_ROOM)
    if source is None:
        reports = ReportsUnavailable("this server reads no cluster")
    elif timeout <= 0:
        reports = ReportsUnavailable("no time was left before the request's deadline")
    else:
        read = partial(source.read, request.namespace, timeout=timeout)
        try:
            reports = await asyncio.get_running_loop().run_in_executor(None, read)
        except ReportsUnavailable as error:
            reports = error
    return priced(charges, paying, images, reports)
