"""Risk points from a release's vulnerabilities: a Trivy or CycloneDX JSON report read with
every size bounded, and the points it costs under a RiskBudget's `vulnerabilityPoints`.

A report comes from outside (a CI job's file), so anything unexpected is a ReportError
naming the first problem, never a guess: an unknown severity or VEX state would otherwise
be charged as something it is not. The same vulnerability listed for several packages
counts once, at its highest severity.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from budgetops.apis.jsonbody import JsonError, read_json
from budgetops.apis.riskbudget import MAX_RISK_POINTS, VulnerabilityPoints

Severity = Literal["critical", "high", "medium", "low", "unknown", "none"]
SEVERITIES: tuple[Severity, ...] = ("critical", "high", "medium", "low", "unknown", "none")
"""Highest first. `none` (CycloneDX's info and none) always weighs nothing."""

REPORT_MAX_BYTES = 16 * 1024 * 1024
"""The largest report read: a large image's Trivy report is a few MB."""
ENTRIES_MAX = 20_000
"""Vulnerability entries one report may list (duplicates across packages included)."""
ID_MAX = 128
"""Characters of a vulnerability id (CVE-2024-12345, GHSA-xxxx-xxxx-xxxx, ...)."""

_TRIVY: dict[str, Severity] = {
    "CRITICAL": "critical",
    "HIGH": "high",
    "MEDIUM": "medium",
    "LOW": "low",
    "UNKNOWN": "unknown",
}
_CYCLONEDX: dict[str, Severity] = {
    "critical": "critical",
    "high": "high",
    "medium": "medium",
    "low": "low",
    "unknown": "unknown",
    "info": "none",
    "none": "none",
}
NOT_AFFECTING = frozenset({"not_affected", "false_positive", "resolved", "resolved_with_pedigree"})
"""VEX analysis states that take a vulnerability out of the charge."""
_VEX_STATES = NOT_AFFECTING | {"exploitable", "in_triage"}


class ReportError(ValueError):
    """A vulnerability report that is not one this reads, or breaks a bound."""


@dataclass(frozen=True)
class Report:
    """One parsed report: what it charges for, what VEX excluded, and its digest."""

    name: str
    format: Literal["trivy", "cyclonedx", "trivy-operator"]
    digest: str
    findings: dict[str, Severity]
    """Charged vulnerabilities by id, at their highest severity."""
    excluded: frozenset[str]
    """Ids a VEX analysis says do not affect the release (not_affected, resolved, ...)."""

    @property
    def listed(self) -> frozenset[str]:
        """Every id the report names, excluded or not."""
        return frozenset(self.findings) | self.excluded

    def to_predicate(self, role: str) -> dict[str, str]:
        return {"role": role, "name": self.name, "format": self.format, "digest": self.digest}


def parse_report(data: bytes, *, name: str) -> Report:
    """The report in `data` (from the file `name`); ReportError on anything unexpected."""
    if len(data) > REPORT_MAX_BYTES:
        raise ReportError(f"{name}: larger than {REPORT_MAX_BYTES} bytes")
    try:
        document = read_json(data)
    except (JsonError, UnicodeDecodeError) as error:
        raise ReportError(f"{name}: not JSON within bounds: {error}") from None
    if not isinstance(document, dict):
        raise ReportError(f"{name}: not a Trivy or CycloneDX JSON report (not an object)")
    digest = f"sha256:{hashlib.sha256(data).hexdigest()}"
    if document.get("bomFormat") == "CycloneDX":
        findings, excluded = _cyclonedx(document, name)
        return Report(name, "cyclonedx", digest, findings, excluded)
    if "Results" in document or "SchemaVersion" in document:
        return Report(name, "trivy", digest, _trivy(document, name), frozenset())
    raise ReportError(f"{name}: neither a Trivy report (Results) nor a CycloneDX BOM (bomFormat)")


def _items(value: Any, what: str, name: str) -> list[Any]:
    """A list that may be absent or null, as both formats omit empty ones."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise ReportError(f"{name}: {what} is not a list")
    return value


def _id(value: Any, name: str) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= ID_MAX or not value.isprintable():
        raise ReportError(
            f"{name}: a vulnerability id must be printable text of 1 to {ID_MAX} characters"
        )
    return value


def _severity(value: Any, known: dict[str, Severity], name: str) -> Severity:
    if not isinstance(value, str) or value not in known:
        shown = value if isinstance(value, str) and len(value) <= 32 else type(value).__name__
        raise ReportError(f"{name}: unknown severity {shown!r} (known: {', '.join(known)})")
    return known[value]


def keep_highest(findings: dict[str, Severity], ident: str, severity: Severity) -> None:
    """Record `ident` at the higher of its severities so far."""
    old = findings.get(ident)
    if old is None or SEVERITIES.index(severity) < SEVERITIES.index(old):
        findings[ident] = severity


def _counted(entries: int, name: str) -> None:
    if entries > ENTRIES_MAX:
        raise ReportError(f"{name}: more than {ENTRIES_MAX} vulnerability entries")


def _trivy(document: dict[str, Any], name: str) -> dict[str, Severity]:
    findings: dict[str, Severity] = {}
    entries = 0
    for result in _items(document.get("Results"), "Results", name):
        if not isinstance(result, dict):
            raise ReportError(f"{name}: a Results entry is not an object")
        listed = _items(result.get("Vulnerabilities"), "Vulnerabilities", name)
        entries = trivy_entries(listed, findings, entries, name=name)
    return findings


def trivy_entries(
    listed: list[Any],
    findings: dict[str, Severity],
    entries: int = 0,
    *,
    name: str,
    keys: tuple[str, str] = ("VulnerabilityID", "Severity"),
) -> int:
    """Keep Trivy's vulnerability entries in `findings`, `entries` already counted before
    them; the count after them. `keys` name the id and the severity: Trivy's JSON writes
    `VulnerabilityID`, Trivy Operator's reports `vulnerabilityID` and `severity`."""
    ident_key, severity_key = keys
    for entry in listed:
        entries += 1
        _counted(entries, name)
        if not isinstance(entry, dict):
            raise ReportError(f"{name}: a vulnerability entry is not an object")
        ident = _id(entry.get(ident_key), name)
        keep_highest(findings, ident, _severity(entry.get(severity_key), _TRIVY, name))
    return entries


def _cyclonedx(document: dict[str, Any], name: str) -> tuple[dict[str, Severity], frozenset[str]]:
    vulnerabilities = _items(document.get("vulnerabilities"), "vulnerabilities", name)
    _counted(len(vulnerabilities), name)
    findings: dict[str, Severity] = {}
    excluded: set[str] = set()
    for entry in vulnerabilities:
        if not isinstance(entry, dict):
            raise ReportError(f"{name}: a vulnerability entry is not an object")
        ident = _id(entry.get("id"), name)
        analysis = entry.get("analysis") or {}
        if not isinstance(analysis, dict):
            raise ReportError(f"{name}: {ident}: analysis is not an object")
        state = analysis.get("state")
        if state is not None and (not isinstance(state, str) or state not in _VEX_STATES):
            raise ReportError(f"{name}: {ident}: unknown VEX analysis state")
        severity: Severity = "unknown"
        ratings = _items(entry.get("ratings"), f"{ident}: ratings", name)
        _counted(len(ratings), name)
        for rating in ratings:
            if not isinstance(rating, dict):
                raise ReportError(f"{name}: {ident}: a rating is not an object")
            found = _severity(rating.get("severity", "unknown"), _CYCLONEDX, name)
            if SEVERITIES.index(found) < SEVERITIES.index(severity) or severity == "unknown":
                severity = found
        if state in NOT_AFFECTING:
            excluded.add(ident)
        else:
            keep_highest(findings, ident, severity)
    return findings, frozenset(excluded - findings.keys())


class Evidence(Protocol):
    """What a release's points were computed from, as its signed verdict names it."""

    def to_predicate(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class VulnerabilityScore:
    """What a release's vulnerabilities cost: counts introduced and carried forward by
    severity, the weights applied and the points, with the reports' digests for the verdict."""

    report: Report
    baseline: Report | None
    weights: VulnerabilityPoints
    introduced: dict[Severity, int]
    carried_forward: dict[Severity, int]
    points: int

    def to_predicate(self) -> dict[str, Any]:
        """The `release.vulnerabilities` block of a verdict."""
        inputs = [self.report.to_predicate("report")]
        if self.baseline is not None:
            inputs.append(self.baseline.to_predicate("baseline"))
        return {
            "inputs": inputs,
            "weights": self.weights.model_dump(by_alias=True),
            "introduced": dict(self.introduced),
            "carriedForward": dict(self.carried_forward),
            "excluded": len(self.report.excluded),
            "points": self.points,
        }


def score(
    report: Report, baseline: Report | None, weights: VulnerabilityPoints
) -> VulnerabilityScore:
    """Points for `report`: each vulnerability its weight, those the baseline already
    listed `carriedForwardPercent` of it (the sum rounded up), at most MAX_RISK_POINTS."""
    before = baseline.listed if baseline is not None else frozenset()
    introduced: Counter[Severity] = Counter()
    carried: Counter[Severity] = Counter()
    for ident, severity in report.findings.items():
        (carried if ident in before else introduced)[severity] += 1

    def weighed(counts: Counter[Severity]) -> int:
        return sum(getattr(weights, s, 0) * n for s, n in counts.items() if s != "none")

    carried_points = -(-weighed(carried) * weights.carried_forward_percent // 100)
    points = min(weighed(introduced) + carried_points, MAX_RISK_POINTS)
    return VulnerabilityScore(
        report=report,
        baseline=baseline,
        weights=weights,
        introduced={s: introduced[s] for s in SEVERITIES},
        carried_forward={s: carried[s] for s in SEVERITIES},
        points=points,
    )
