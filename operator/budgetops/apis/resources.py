"""The custom resources as whole objects, and how each is named to the API server."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from pydantic import ConfigDict, Field, ValidationError

from budgetops.apis import tiers
from budgetops.apis.budgetapproval import BudgetApprovalSpec, BudgetApprovalStatus
from budgetops.apis.budgetlease import BudgetLeaseSpec, BudgetLeaseStatus
from budgetops.apis.common import API_VERSION, NAME_PATTERN, Model
from budgetops.apis.riskbudget import RiskBudgetSpec, RiskBudgetStatus
from budgetops.apis.trustbudget import TrustBudgetSpec, TrustBudgetStatus

Kind = Literal["TrustBudget", "RiskBudget", "BudgetLease", "BudgetApproval"]


class ObjectMeta(Model):
    """The parts of `metadata` BudgetOps reads; the rest passes through untouched."""

    model_config = ConfigDict(extra="allow")

    name: str = Field(min_length=1, max_length=253, pattern=NAME_PATTERN)
    namespace: str | None = Field(default=None, max_length=63)
    uid: str | None = None
    generation: int | None = None
    resource_version: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class Subject(Protocol):
    """What an Event is about: a budget, of which an Event reads only the kind and metadata."""

    @property
    def kind(self) -> str: ...

    @property
    def metadata(self) -> ObjectMeta: ...


class TrustBudget(Model):
    """A per-account issuance budget."""

    api_version: Literal["budgetops.dev/v1alpha1"] = "budgetops.dev/v1alpha1"
    kind: Literal["TrustBudget"] = "TrustBudget"
    metadata: ObjectMeta
    spec: TrustBudgetSpec
    status: TrustBudgetStatus = Field(default_factory=TrustBudgetStatus)


class RiskBudget(Model):
    """A service's risk-point budget per window."""

    api_version: Literal["budgetops.dev/v1alpha1"] = "budgetops.dev/v1alpha1"
    kind: Literal["RiskBudget"] = "RiskBudget"
    metadata: ObjectMeta
    spec: RiskBudgetSpec
    status: RiskBudgetStatus = Field(default_factory=RiskBudgetStatus)


class BudgetLease(Model):
    """A slice of a parent budget lent to a holder."""

    api_version: Literal["budgetops.dev/v1alpha1"] = "budgetops.dev/v1alpha1"
    kind: Literal["BudgetLease"] = "BudgetLease"
    metadata: ObjectMeta
    spec: BudgetLeaseSpec
    status: BudgetLeaseStatus = Field(default_factory=BudgetLeaseStatus)


class BudgetApproval(Model):
    """One person's approval of a TrustBudget's break-glass request."""

    api_version: Literal["budgetops.dev/v1alpha1"] = "budgetops.dev/v1alpha1"
    kind: Literal["BudgetApproval"] = "BudgetApproval"
    metadata: ObjectMeta
    spec: BudgetApprovalSpec
    status: BudgetApprovalStatus = Field(default_factory=BudgetApprovalStatus)


Budget = TrustBudget | RiskBudget | BudgetLease | BudgetApproval


@dataclass(frozen=True, order=True)
class BudgetKey:
    """Kind, namespace (empty for the cluster-scoped TrustBudget) and name.

    A plain value of the models layer, so that pure code (classification, the engine's
    callers) can name a budget without importing the store that keeps it.
    """

    kind: Kind
    name: str
    namespace: str = ""

    def __str__(self) -> str:
        where = f"{self.namespace}/" if self.namespace else ""
        return f"{self.kind}/{where}{self.name}"

    @classmethod
    def of(cls, budget: Budget) -> BudgetKey:
        return cls(budget.kind, budget.metadata.name, budget.metadata.namespace or "")


@dataclass(frozen=True)
class PrinterColumn:
    """One `kubectl get` column."""

    name: str
    type: str
    json_path: str
    description: str
    priority: int = 0


@dataclass(frozen=True)
class ResourceInfo:
    """Everything the API server needs to know about a kind besides its schema."""

    kind: Kind
    model: type[TrustBudget] | type[RiskBudget] | type[BudgetLease] | type[BudgetApproval]
    plural: str
    short_name: str
    scope: Literal["Cluster", "Namespaced"]
    description: str
    columns: tuple[PrinterColumn, ...]


_AGE = PrinterColumn("Age", "date", ".metadata.creationTimestamp", "Time since creation")

RESOURCES: dict[Kind, ResourceInfo] = {
    "TrustBudget": ResourceInfo(
        kind="TrustBudget",
        model=TrustBudget,
        plural="trustbudgets",
        short_name="tb",
        scope="Cluster",
        description="Per-account issuance budget charged at admission time.",
        columns=(
            PrinterColumn("Key", "string", ".spec.accountKey", "Account key template"),
            PrinterColumn("Allocation", "string", ".spec.initialBalance", "Balance per account"),
            PrinterColumn("Reset", "string", ".spec.resetInterval", "Reset interval"),
            PrinterColumn(
                "Lowest", "string", ".status.lowestBalance", "Lowest balance of any account"
            ),
            PrinterColumn("Exhausted", "integer", ".status.exhaustedAccounts", "Accounts at zero"),
            PrinterColumn("Mode", "string", ".spec.enforcement", "enforce or warn", 1),
            _AGE,
        ),
    ),
    "RiskBudget": ResourceInfo(
        kind="RiskBudget",
        model=RiskBudget,
        plural="riskbudgets",
        short_name="rb",
        scope="Namespaced",
        description="A service's risk-point budget per window, with bands and history.",
        columns=(
            PrinterColumn("Service", "string", ".spec.serviceId", "Service id"),
            PrinterColumn("Window", "string", ".status.window.key", "Current window"),
            PrinterColumn("Consumed", "integer", ".status.consumed", "Risk points consumed"),
            PrinterColumn("Allocation", "integer", ".status.allocation", "Risk points allocated"),
            PrinterColumn("Used", "string", ".status.percentUsed", "Percent of allocation used"),
            PrinterColumn("Band", "string", ".status.band", "Green, Yellow, Red or Exhausted"),
            PrinterColumn("Resets", "date", ".status.window.end", "End of the window", 1),
            _AGE,
        ),
    ),
    "BudgetLease": ResourceInfo(
        kind="BudgetLease",
        model=BudgetLease,
        plural="budgetleases",
        short_name="bl",
        scope="Namespaced",
        description="A slice of a parent budget lent to a holder.",
        columns=(
            PrinterColumn("Parent", "string", ".spec.budgetRef.name", "Parent budget"),
            PrinterColumn("Holder", "string", ".spec.holder.id", "Holder id"),
            PrinterColumn("Granted", "string", ".status.granted", "Amount granted"),
            PrinterColumn("Remaining", "string", ".status.remaining", "Amount left"),
            PrinterColumn("Phase", "string", ".status.phase", "Lease phase"),
            PrinterColumn("Expires", "date", ".status.expiresAt", "Expiry", 1),
            _AGE,
        ),
    ),
    "BudgetApproval": ResourceInfo(
        kind="BudgetApproval",
        model=BudgetApproval,
        plural="budgetapprovals",
        short_name="ba",
        scope="Cluster",
        description="One person's approval of a TrustBudget's break-glass request.",
        columns=(
            PrinterColumn("Budget", "string", ".spec.budget", "TrustBudget"),
            PrinterColumn("Request", "string", ".spec.request", "Break-glass request id"),
            PrinterColumn("Approver", "string", ".spec.approver", "Who approves"),
            PrinterColumn("Recorded", "boolean", ".status.recorded", "Counted by the operator"),
            PrinterColumn("Message", "string", ".status.message", "Why not, if not", 1),
            _AGE,
        ),
    ),
}


class ManifestError(ValueError):
    """A manifest that does not describe a valid BudgetOps object; `errors` name each field."""

    def __init__(self, source: str, errors: list[str]) -> None:
        self.source = source
        self.errors = errors
        super().__init__(f"{source}: " + "; ".join(errors))


def field_errors(error: ValidationError) -> list[str]:
    """Pydantic's errors as `spec.cost: must be ...` lines, with the wire (camelCase) path."""
    lines = []
    for item in error.errors():
        path = ".".join(str(part) if isinstance(part, str) else f"[{part}]" for part in item["loc"])
        message = (
            "unknown field"
            if item["type"] == "extra_forbidden"
            else item["msg"].removeprefix("Value error, ")
        )
        lines.append(f"{path.replace('.[', '[')}: {message}" if path else message)
    return lines


def parse_manifest(document: Mapping[str, Any], *, source: str = "manifest") -> Budget:
    """Turn one YAML/JSON document into its model, or raise ManifestError with field paths."""
    api_version = document.get("apiVersion")
    kind = document.get("kind")
    if api_version != API_VERSION:
        raise ManifestError(source, [f"apiVersion: expected {API_VERSION}, got {api_version!r}"])
    if kind not in RESOURCES:
        known = ", ".join(RESOURCES)
        raise ManifestError(source, [f"kind: expected one of {known}, got {kind!r}"])
    info = RESOURCES[kind]
    try:
        budget = info.model.model_validate(dict(document))
    except ValidationError as error:
        raise ManifestError(source, field_errors(error)) from error
    if isinstance(budget, RiskBudget):  # a stored budget is never refused for it (tiers.py)
        refused = tiers.active().refusal(budget.spec.tier, budget.spec.allocation)
        if refused is not None:
            raise ManifestError(source, [f"spec.tier: {refused}"])
    return budget


def parse_manifests(documents: Iterable[tuple[str, Mapping[str, Any]]]) -> list[Budget]:
    """Parse every document, collecting all errors before failing so users fix them at once."""
    budgets: list[Budget] = []
    errors: list[str] = []
    for source, document in documents:
        try:
            budgets.append(parse_manifest(document, source=source))
        except ManifestError as error:
            errors.extend(f"{error.source}: {line}" for line in error.errors)
    if errors:
        raise ManifestError("manifests", errors)
    return budgets
