"""RiskBudget: one service's risk points per window, the band they put it in, and its history."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from decimal import Decimal
from typing import Annotated, Literal, Self

from pydantic import Field, WithJsonSchema, model_validator

from budgetops.apis import tiers
from budgetops.apis.common import (
    Amount,
    Condition,
    Enforcement,
    FailMode,
    Model,
    Percent,
    Timestamp,
    cel,
)
from budgetops.apis.ledger import Ledger
from budgetops.apis.notifications import Notifications
from budgetops.apis.numbers import COUNT_MAX, REASON_MAX, REASONS_MAX
from budgetops.apis.tiers import TierNumber

MAX_RISK_POINTS = 100_000
"""The most risk points one release may declare."""

ChangeClass = Literal["standard", "low-risk", "security-fix", "incident"]
Band = Literal["Green", "Yellow", "Red", "Exhausted"]
Cadence = Literal["monthly", "weekly", "sprint"]
UnknownsAction = Literal["warn", "block"]
RiskPointsFrom = Literal["Declared", "TrivyOperator"]

ANNOTATION_RISK_POINTS = "budgetops.dev/risk-points"
ANNOTATION_CHANGE_CLASS = "budgetops.dev/change-class"
ANNOTATION_RELEASE_ID = "budgetops.dev/release-id"
ANNOTATION_UNKNOWNS = "budgetops.dev/unknowns"
ANNOTATION_UNCERTAINTY = "budgetops.dev/uncertainty"


class Sprint(Model):
    """Sprints of `lengthDays` days, counted from `anchor` (a UTC date) in both directions."""

    length_days: int = Field(ge=1, le=90)
    anchor: date


class Window(Model):
    """When one budget window ends and the next begins (always at 00:00 UTC)."""

    model_config = cel(
        (
            "(self.cadence == 'sprint') == has(self.sprint)",
            "sprint is required for cadence sprint and only for it",
        ),
    )

    cadence: Cadence = "monthly"
    sprint: Sprint | None = None

    @model_validator(mode="after")
    def _sprint_iff_cadence(self) -> Self:
        if (self.cadence == "sprint") != (self.sprint is not None):
            raise ValueError("sprint is required for cadence sprint and only for it")
        return self


class Thresholds(Model):
    """Percent of the allocation consumed at which the band turns Yellow, Red and Exhausted."""

    model_config = cel(
        (
            "self.yellow < self.red && self.red < self.exhausted",
            "thresholds must increase strictly: yellow < red < exhausted",
        ),
    )

    yellow: Percent = 40
    red: Percent = 70
    exhausted: Percent = 100

    @model_validator(mode="after")
    def _increasing(self) -> Self:
        if not self.yellow < self.red < self.exhausted:
            raise ValueError("thresholds must increase strictly: yellow < red < exhausted")
        return self


BandChanges = list[ChangeClass]


def _classes(*names: ChangeClass) -> Callable[[], BandChanges]:
    return lambda: list(names)


class BandPolicy(Model):
    """Which change classes may ship in each band; the defaults tighten as the band worsens."""

    green: BandChanges = Field(
        default_factory=_classes("standard", "low-risk", "security-fix", "incident")
    )
    yellow: BandChanges = Field(
        default_factory=_classes("standard", "low-risk", "security-fix", "incident")
    )
    red: BandChanges = Field(default_factory=_classes("low-risk", "security-fix", "incident"))
    exhausted: BandChanges = Field(default_factory=_classes("security-fix", "incident"))

    def allows(self, band: Band) -> list[ChangeClass]:
        """The change classes `band` lets through."""
        return {
            "Green": self.green,
            "Yellow": self.yellow,
            "Red": self.red,
            "Exhausted": self.exhausted,
        }[band]


class ReleaseDeclaration(Model):
    """How a workload declares its release: annotation names and defaults when absent."""

    risk_points_annotation: str = Field(default=ANNOTATION_RISK_POINTS, max_length=253)
    change_class_annotation: str = Field(default=ANNOTATION_CHANGE_CLASS, max_length=253)
    release_id_annotation: str = Field(default=ANNOTATION_RELEASE_ID, max_length=253)
    default_risk_points: int = Field(default=10, ge=0, le=MAX_RISK_POINTS)
    default_change_class: ChangeClass = "standard"
    risk_points_from: RiskPointsFrom = Field(
        default="Declared",
        description="Declared: the risk-points annotation, else defaultRiskPoints. "
        "TrivyOperator: a release that changes its images costs what their Trivy Operator "
        "VulnerabilityReports list, by vulnerabilityPoints, the images it ran before being "
        "the baseline; the declared points when a new image has no report",
    )


class VulnerabilityPoints(Model):
    """What a release computes its risk points from when it brings its vulnerability report
    (`--vulnerabilities`) or admission reads its images' VulnerabilityReports
    (`release.riskPointsFrom: TrivyOperator`): points per vulnerability by severity, paid in
    full for those it introduces and `carriedForwardPercent` of that (rounded up) for those
    the previous release's report already listed, so fixing old ones is cheaper than
    shipping new ones."""

    critical: int = Field(default=10, ge=0, le=MAX_RISK_POINTS)
    high: int = Field(default=5, ge=0, le=MAX_RISK_POINTS)
    medium: int = Field(default=2, ge=0, le=MAX_RISK_POINTS)
    low: int = Field(default=1, ge=0, le=MAX_RISK_POINTS)
    unknown: int = Field(default=0, ge=0, le=MAX_RISK_POINTS)
    carried_forward_percent: Percent = 50


class UnknownsBudget(Model):
    """Limits on what a release could not assess (unknown reachability, identity, ...)."""

    max_unknown_count: int = Field(ge=0, le=COUNT_MAX)
    max_cumulative_uncertainty: Amount
    reason_limits: dict[str, Annotated[int, WithJsonSchema({"type": "integer", "minimum": 0})]] = (
        Field(default_factory=dict)
    )
    action: UnknownsAction = "warn"

    @model_validator(mode="after")
    def _non_negative_limits(self) -> Self:
        negative = sorted(reason for reason, limit in self.reason_limits.items() if limit < 0)
        if negative:
            raise ValueError(f"reason limits must not be negative: {', '.join(negative)}")
        return self


OTHER_REASONS = "(other)"
"""Where a window's tally counts reasons past the REASONS_MAX it names, so releases naming
a new reason each cannot grow a status without bound."""


class UnknownsTally(Model):
    """A window's unknowns: what the releases it admitted reported, and how many releases
    exceeded the unknowns budget (admitted with a warning, or blocked)."""

    releases: int = Field(default=0, ge=0, description="Admitted releases that reported unknowns")
    total: int = Field(default=0, ge=0, description="Unknowns those releases reported")
    cumulative_uncertainty: Amount = Decimal(0)
    by_reason: dict[str, Annotated[int, Field(ge=0)]] = Field(
        default_factory=dict, max_length=REASONS_MAX + 1
    )
    warned: int = Field(default=0, ge=0, description="Releases admitted past a limit")
    blocked: int = Field(default=0, ge=0, description="Releases refused for their unknowns")

    @model_validator(mode="after")
    def _named(self) -> Self:
        """Reason names as `apis.numbers.counts` reads them (a CRD cannot bound map keys)."""
        if any(not 0 < len(reason) <= REASON_MAX for reason in self.by_reason):
            raise ValueError(f"reason names must have 1 to {REASON_MAX} characters")
        return self


class EarnedCapacity(Model):
    """Extra allocation for a service whose MTTR and change-failure rate keep improving."""

    model_config = cel(
        (
            "self.minIncreasePercent <= self.maxIncreasePercent",
            "minIncreasePercent must not exceed maxIncreasePercent",
        ),
    )

    enabled: bool = True
    required_improvement_windows: int = Field(default=2, ge=1, le=12)
    min_increase_percent: Percent = 10
    max_increase_percent: Percent = 20

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.min_increase_percent > self.max_increase_percent:
            raise ValueError("minIncreasePercent must not exceed maxIncreasePercent")
        return self


class LabelSelectorRequirement(Model):
    """One `matchExpressions` term of a Kubernetes label selector."""

    key: str = Field(max_length=317)
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: list[str] = Field(default_factory=list)


class LabelSelector(Model):
    """The workloads whose releases this budget pays for."""

    match_labels: dict[str, str] = Field(default_factory=dict)
    match_expressions: list[LabelSelectorRequirement] = Field(default_factory=list)


class RiskBudgetSpec(Model):
    """A service's risk allowance per window and the rules for spending it."""

    service_id: str = Field(
        min_length=1, max_length=253, pattern=r"^[a-z0-9]([-.a-z0-9]*[a-z0-9])?$"
    )
    tier: TierNumber | None = Field(
        default=None,
        description="A row of the operator's tier table (built in: 0-3); its defaultTier when "
        "neither tier nor allocation is set",
    )
    allocation: int | None = Field(default=None, ge=1, le=1_000_000)
    window: Window = Field(default_factory=Window)
    carry_over: bool = False
    thresholds: Thresholds = Field(default_factory=Thresholds)
    selector: LabelSelector = Field(default_factory=LabelSelector)
    release: ReleaseDeclaration = Field(default_factory=ReleaseDeclaration)
    bands: BandPolicy = Field(default_factory=BandPolicy)
    unknowns: UnknownsBudget | None = None
    vulnerability_points: VulnerabilityPoints = Field(default_factory=VulnerabilityPoints)
    earned_capacity: EarnedCapacity = Field(default_factory=EarnedCapacity)
    notifications: Notifications = Field(default_factory=Notifications)
    enforcement: Enforcement = "enforce"
    fail_mode: FailMode = "failClosed"
    environment: str = Field(
        default="",
        max_length=63,
        description="Named in this budget's signed verdicts; the namespace when empty",
    )

    def base_allocation(self) -> int:
        """The explicit allocation if given, else its tier's in the active tier table (the
        table's defaultTier when it names none). ValueError when the table lacks that tier:
        the table can change after a budget was stored, so this is checked where a window is
        sized, never when a stored budget is read."""
        if self.allocation is not None:
            return self.allocation
        return tiers.active().row(self.tier)[1].allocation


class WindowRef(Model):
    """The window a status speaks of: `2026-11`, `2026-W47` or `sprint-2026-11-16`."""

    key: str = Field(max_length=32)
    start: Timestamp
    end: Timestamp


class Reliability(Model):
    """Reliability figures reported for a window; they feed earned capacity."""

    mttr_hours: Amount | None = None
    change_failure_rate_percent: Amount | None = None
    p1_incidents: int = Field(default=0, ge=0)


class WindowSummary(Model):
    """A closed window, as kept in `status.history`."""

    window: WindowRef
    allocated: int
    consumed: int
    entries: int
    band_reached: Band
    reliability: Reliability = Field(default_factory=Reliability)
    earned_increase: int = Field(default=0, description="Points this window earned the next one")
    earned_reason: str = Field(default="", max_length=1024)
    unknowns: UnknownsTally = Field(default_factory=UnknownsTally)


class RiskBudgetStatus(Ledger):
    """The current window's ledger (one account, the service) and band, closed windows."""

    observed_generation: int | None = None
    window: WindowRef | None = None
    allocation: int | None = None
    consumed: int = 0
    percent_used: str = "0"
    band: Band = "Green"
    band_reached: Band = "Green"
    earned_increase: int = 0
    reliability: Reliability = Field(default_factory=Reliability)
    unknowns: UnknownsTally = Field(default_factory=UnknownsTally)
    history: list[WindowSummary] = Field(default_factory=list, max_length=24)
    conditions: list[Condition] = Field(default_factory=list)
