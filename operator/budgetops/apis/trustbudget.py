"""TrustBudget: a per-account issuance budget (certificates, tokens, any matched admission)."""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal
from fnmatch import fnmatchcase
from typing import Annotated, Literal, Self

from pydantic import Field, WithJsonSchema, field_validator, model_validator

from budgetops.apis.agents import AGENT_ID_MAX, Agents, InformativeAllocations, SpentBy
from budgetops.apis.common import (
    Amount,
    Condition,
    Duration,
    Enforcement,
    FailMode,
    Model,
    Percent,
    PositiveAmount,
    Timestamp,
    Unit,
    cel,
)
from budgetops.apis.ledger import Ledger
from budgetops.apis.notifications import Notifications

TEMPLATE_VARIABLES = frozenset({"username", "group", "namespace", "name"})
TEMPLATE_VARIABLE = re.compile(r"\$\{([^}]*)\}")
"""`${name}` in an account key template; group 1 is the name."""
_VARIABLE_VALUES = {"namespace": "[^/:]+", "name": "[^/:]+"}
"""What each variable can render to: Kubernetes names hold neither `/` nor `:`, while a
username (`system:serviceaccount:ns:name`) or a group (`system:masters`) may hold anything."""


def account_key_pattern(template: str) -> re.Pattern[str]:
    """The account keys `template` renders to: its literal parts exactly, each `${var}` one
    or more characters (see _VARIABLE_VALUES). Pure."""
    parts: list[str] = []
    end = 0
    for match in TEMPLATE_VARIABLE.finditer(template):
        parts.append(re.escape(template[end : match.start()]))
        parts.append(f"(?:{_VARIABLE_VALUES.get(match.group(1), '.+')})")
        end = match.end()
    parts.append(re.escape(template[end:]))
    return re.compile("".join(parts), re.DOTALL)


SERVICE_ACCOUNT_PREFIX = "system:serviceaccount:"
_SERVICE_ACCOUNT = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?/([a-z0-9]([-.a-z0-9]*[a-z0-9])?|\*)$"

ServiceAccount = Annotated[str, WithJsonSchema({"type": "string", "pattern": _SERVICE_ACCOUNT})]
"""`namespace/name` or `namespace/*`: the API server checks the pattern, the model says why."""

Operation = Literal["CREATE", "UPDATE", "DELETE", "CONNECT"]
AlertKind = Literal["Exhausted", "LowBalance", "RapidDepletion"]


class SubjectSet(Model):
    """Requesters named by user, group, service account (`namespace/name`) or username glob."""

    users: list[str] = Field(default_factory=list, max_length=256)
    groups: list[str] = Field(default_factory=list, max_length=256)
    service_accounts: list[ServiceAccount] = Field(default_factory=list, max_length=256)
    patterns: list[str] = Field(default_factory=list, max_length=64)

    @field_validator("service_accounts")
    @classmethod
    def _namespaced(cls, values: list[str]) -> list[str]:
        for value in values:
            if not re.match(_SERVICE_ACCOUNT, value):
                raise ValueError(
                    f"{value!r} is not namespace/name (use namespace/* for every account)"
                )
        return values

    def is_empty(self) -> bool:
        return not (self.users or self.groups or self.service_accounts or self.patterns)

    def names(self, username: str, groups: list[str]) -> bool:
        """Whether the set names this person: by username, one of `groups`, their service
        account (`ns/name`, `ns/*`) or a username glob."""
        if username in self.users or any(g in self.groups for g in groups):
            return True
        namespace, _, name = username.removeprefix(SERVICE_ACCOUNT_PREFIX).partition(":")
        if username.startswith(SERVICE_ACCOUNT_PREFIX) and namespace and name:
            accounts = set(self.service_accounts)
            if f"{namespace}/{name}" in accounts or f"{namespace}/*" in accounts:
                return True
        return any(fnmatchcase(username, pattern) for pattern in self.patterns)

    def describe(self) -> str:
        """Who the set names, as a message lists them: `bob, carol or group sre`."""
        named = [
            *self.users,
            *(f"group {g}" for g in self.groups),
            *(f"service account {s}" for s in self.service_accounts),
            *(f"a username matching {p}" for p in self.patterns),
        ]
        if len(named) < 2:
            return "".join(named) or "nobody"
        return f"{', '.join(named[:-1])} or {named[-1]}"


_NAMES_SOMEONE = " || ".join(
    f"(has(self.{field}) && size(self.{field}) > 0)"
    for field in ("users", "groups", "serviceAccounts", "patterns")
)


class Subjects(SubjectSet):
    """Who the budget governs, minus who it never charges."""

    model_config = cel(
        (_NAMES_SOMEONE, "name at least one of users, groups, serviceAccounts or patterns")
    )

    exclude: SubjectSet = Field(default_factory=SubjectSet)

    @model_validator(mode="after")
    def _names_someone(self) -> Self:
        if self.is_empty():
            raise ValueError(
                "name at least one of users, groups, serviceAccounts or patterns "
                '(patterns: ["*"] governs every requester)'
            )
        return self


def _create_only() -> list[Operation]:
    return ["CREATE"]


NO_WILDCARDS = (
    "name the group, resource and subresource exactly: wildcards (*) are not supported "
    "(the webhook's rules choose what BudgetOps sees; a budget names what it charges)"
)


class NamedResource(Model):
    """One API resource, named exactly. A wildcard is refused rather than matched: it would
    charge whatever the webhook happens to be sent, and make costs ambiguous."""

    model_config = cel(
        (
            "!self.resource.contains('*')"
            " && (!has(self.group) || !self.group.contains('*'))"
            " && (!has(self.subresource) || !self.subresource.contains('*'))",
            NO_WILDCARDS,
        )
    )

    group: str = Field(default="", max_length=253)
    resource: str = Field(min_length=1, max_length=253)
    subresource: str = Field(default="", max_length=64)

    @model_validator(mode="after")
    def _no_wildcards(self) -> Self:
        if "*" in self.group + self.resource + self.subresource:
            raise ValueError(NO_WILDCARDS)
        return self


class ResourceMatch(NamedResource):
    """An API resource whose admission is charged, e.g. certificatesigningrequests CREATE."""

    operations: list[Operation] = Field(default_factory=_create_only, min_length=1)


class CostOverride(NamedResource):
    """A different cost for one resource, e.g. a long-lived token costs more than a CSR."""

    cost: PositiveAmount


class RapidDepletion(Model):
    """Alert when more than `percent` of the allocation goes within `within`."""

    percent: Percent = 50
    within: Duration = timedelta(hours=1)


class Alerts(Model):
    """Thresholds that raise conditions, Events and notifications (never denials)."""

    low_balance_percent: Percent = 20
    exhaustion: bool = True
    rapid_depletion: RapidDepletion = Field(default_factory=RapidDepletion)


class Sessions(Model):
    """What each runtime leasing from this budget is told with every lease (USD budgets)."""

    max_call_cost: PositiveAmount | None = Field(
        default=None,
        description=(
            "No single call may cost more (USD): the SDK refuses a call estimated above it "
            "before making it; a report of one above it is counted (the money is spent) and "
            "flagged in the lease API's answer"
        ),
    )
    warn_at_percent: int | None = Field(
        default=None,
        ge=1,
        le=99,
        description=(
            "Warn the runtime, in the lease API's answers and the SDK's callback, once a "
            "lease has spent this share of what it was granted, or its account this share "
            "of its allocation"
        ),
    )


class RateLimit(Model):
    """At most `count` uses per `per` (uses are counted from status, which keeps 100)."""

    count: int = Field(ge=1, le=100)
    per: Duration


APPROVAL_WINDOW_LONGEST = timedelta(hours=24)
_WINDOW_SECONDS = " + ".join(
    f"(self.approvalWindow.find('[0-9]+{unit}') == '' ? 0 : "
    f"int(self.approvalWindow.find('[0-9]+{unit}').replace('{unit}', '')) * {size})"
    for unit, size in (("h", 3600), ("m", 60), ("s", 1))
)
_WINDOW_BOUNDS = "approvalWindow must be from 1m to 24h, written in h, m and s (such as 1h or 90m)"


class Quorum(Model):
    """Approvals by distinct people named in `approvers`, none of them the requester, each
    recorded within `approvalWindow` of the request, before break-glass is honoured once."""

    model_config = cel(
        (
            "!has(self.approvalWindow) || (!self.approvalWindow.contains('d') && "
            f"{_WINDOW_SECONDS} >= 60 && {_WINDOW_SECONDS} <= 86400)",
            _WINDOW_BOUNDS,
        )
    )

    required: int = Field(ge=1, le=10)
    approvers: SubjectSet
    approval_window: Duration = Field(
        default=timedelta(hours=1),
        description="How long a break-glass request waits for its approvals (1m to 24h)",
    )

    @field_validator("approval_window")
    @classmethod
    def _bounded(cls, window: timedelta) -> timedelta:
        if not timedelta(minutes=1) <= window <= APPROVAL_WINDOW_LONGEST:
            raise ValueError(_WINDOW_BOUNDS)
        return window


class BreakGlass(Model):
    """The emergency path past an exhausted budget, with its own tighter controls."""

    subjects: SubjectSet
    max_certificate_ttl: Duration = Field(alias="maxCertificateTTL")
    rate_limit: RateLimit
    require_reason: bool = True
    quorum: Quorum | None = None


class CertManager(Model):
    """How requests that cert-manager's controller creates on someone's behalf are charged.

    The controller creates every CertificateRequest as itself. When one of `controllers`
    creates a request that carries `requesterAnnotation` (set on the Certificate and copied
    to its requests), the budget judges and charges that requester instead; `${namespace}`
    is always the Certificate's namespace.
    """

    controllers: list[str] = Field(
        default_factory=lambda: ["system:serviceaccount:cert-manager:cert-manager"],
        max_length=16,
    )
    requester_annotation: str = Field(default="budgetops.dev/requester", max_length=253)


_WHOLE = "string({}).matches('^[0-9]+([.]0+)?$')"
_DOLLARS_ONLY = (
    "agentAllocations and informativeAllocations are dollars agents lease and report: set unit: USD"
)
_KNOWN_VARIABLES = ", ".join(f"'${{{name}}}'" for name in sorted(TEMPLATE_VARIABLES))


class TrustBudgetSpec(Model):
    """What a TrustBudget governs, what each issuance costs and when balances reset."""

    model_config = cel(
        (
            "(has(self.unit) && self.unit == 'USD') || ("
            f"(!has(self.cost) || {_WHOLE.format('self.cost')})"
            f" && {_WHOLE.format('self.initialBalance')}"
            " && (!has(self.costOverrides) || self.costOverrides.all(o, "
            f"{_WHOLE.format('o.cost')})))",
            "costs and initialBalance must be whole numbers of points (unit is points)",
        ),
        (
            "!has(self.sessions) || !has(self.sessions.maxCallCost) || "
            "(has(self.unit) && self.unit == 'USD')",
            "sessions.maxCallCost limits the calls of a USD budget's leases: set unit: USD",
        ),
        (
            "(has(self.unit) && self.unit == 'USD') || ("
            "(!has(self.agentAllocations) || size(self.agentAllocations) == 0)"
            " && !has(self.informativeAllocations))",
            _DOLLARS_ONLY,
        ),
        (
            "!has(self.agentAllocations) || "
            f"self.agentAllocations.all(k, size(k) <= {AGENT_ID_MAX})",
            f"agentAllocations are by agent id (agent_..., at most {AGENT_ID_MAX} characters)",
        ),
        (
            "!has(self.accountKey) || "
            f"self.accountKey.findAll('[$][{{][^}}]*[}}]').all(v, v in [{_KNOWN_VARIABLES}])",
            "the account key may use only ${username}, ${group}, ${namespace} and ${name}",
        ),
    )

    subjects: Subjects
    account_key: str = Field(default="user:${username}", min_length=1, max_length=253)
    match: list[ResourceMatch] = Field(min_length=1, max_length=32)
    cost: PositiveAmount = Decimal(1)
    cost_overrides: list[CostOverride] = Field(default_factory=list, max_length=32)
    initial_balance: PositiveAmount
    reset_interval: Duration | None = None
    unit: Unit = "points"
    alerts: Alerts = Field(default_factory=Alerts)
    enforcement: Enforcement = "enforce"
    fail_mode: FailMode = "failClosed"
    break_glass: BreakGlass | None = None
    cert_manager: CertManager = Field(default_factory=CertManager)
    sessions: Sessions = Field(default_factory=Sessions)
    notifications: Notifications = Field(default_factory=Notifications)
    environment: str = Field(
        default="",
        max_length=63,
        description="Named in this budget's signed verdicts (production, staging, ...)",
    )
    agent_allocations: dict[str, PositiveAmount] = Field(
        default_factory=dict,
        max_length=1024,
        description=(
            "An agent's own allocation (USD) by agent id, instead of initialBalance: what its "
            "leases may take in all; a change applies on the agent's next lease or reconcile, "
            "never below what is spent or lent"
        ),
    )
    informative_allocations: InformativeAllocations | None = Field(
        default=None,
        description=(
            "Allocations spending by provider, by project and in all is measured against: "
            "progress in status.spentBy.percentUsed and metrics, never a refusal"
        ),
    )

    @field_validator("account_key")
    @classmethod
    def _known_variables(cls, template: str) -> str:
        unknown = set(TEMPLATE_VARIABLE.findall(template)) - TEMPLATE_VARIABLES
        if unknown:
            names = ", ".join(sorted(f"${{{name}}}" for name in unknown))
            known = ", ".join(sorted(f"${{{name}}}" for name in TEMPLATE_VARIABLES))
            raise ValueError(f"unknown variable {names} in the account key; use {known}")
        return template

    @model_validator(mode="after")
    def _dollars(self) -> Self:
        if self.unit == "points" and (self.agent_allocations or self.informative_allocations):
            raise ValueError(_DOLLARS_ONLY)
        for agent_id in self.agent_allocations:
            if len(agent_id) > AGENT_ID_MAX:
                raise ValueError(f"agentAllocations: {agent_id[:AGENT_ID_MAX]}... is no agent id")
        return self

    @model_validator(mode="after")
    def _whole_points(self) -> Self:
        if self.unit == "points" and self.sessions.max_call_cost is not None:
            raise ValueError(
                "sessions.maxCallCost limits the calls of a USD budget's leases: set unit: USD"
            )
        if self.unit == "points":
            amounts = [("cost", self.cost), ("initialBalance", self.initial_balance)]
            amounts += [
                (f"costOverrides[{i}].cost", o.cost) for i, o in enumerate(self.cost_overrides)
            ]
            for path, amount in amounts:
                if amount != amount.to_integral_value():
                    raise ValueError(f"{path} must be a whole number of points (unit is points)")
        return self

    def allocation_for(self, account: str) -> Decimal:
        """What `account` may hold in a window: its agent's own allocation, else
        initialBalance."""
        return self.agent_allocations.get(account, self.initial_balance)

    def renders(self, account: str) -> bool:
        """Whether `account` is a key the account key template can render to."""
        return account_key_pattern(self.account_key).fullmatch(account) is not None

    def cost_for(self, *, group: str, resource: str, subresource: str) -> Decimal:
        """The cost of one admission of this resource (an override, else the default)."""
        for override in self.cost_overrides:
            if (override.group, override.resource, override.subresource) == (
                group,
                resource,
                subresource,
            ):
                return override.cost
        return self.cost


BREAK_GLASS_USES_KEPT = 100
BREAK_GLASS_REQUESTS_MAX = 100
"""Open break-glass requests a budget holds; past it a new one is refused until one closes."""


class BreakGlassUse(Model):
    """One break-glass admission, kept for audit beside the ordinary ledger."""

    at: Timestamp
    account: str
    user: str
    reason: str = Field(max_length=1024)
    object: str = Field(default="", max_length=512)
    approvers: list[str] = Field(default_factory=list, max_length=10)
    announced: bool = Field(
        default=True,
        description=(
            "Told to the notification channels: false until the reconciler has (a use kept "
            "before this field existed counts as told)"
        ),
    )


class Approval(Model):
    """One approver's approval of a break-glass request, as recorded."""

    approver: str = Field(min_length=1, max_length=253)
    at: Timestamp


class BreakGlassRequest(Model):
    """A break-glass ask waiting for its quorum: it passes once, before `deadline`, when
    `approvals` holds the number the quorum requires."""

    id: str = Field(min_length=1, max_length=16)
    account: str = Field(max_length=253)
    user: str = Field(max_length=253)
    reason: str = Field(max_length=1024)
    object: str = Field(default="", max_length=512)
    requested_at: Timestamp
    deadline: Timestamp
    approvals: list[Approval] = Field(default_factory=list, max_length=10)
    used_at: Timestamp | None = None
    announced: int = Field(
        default=0,
        ge=0,
        le=2,
        description="What the notification channels were told: 1 the request, 2 its quorum",
    )


class TrustBudgetStatus(Ledger):
    """Balances per account, recent movements, break-glass uses, conditions."""

    observed_generation: int | None = None
    break_glass_uses: list[BreakGlassUse] = Field(
        default_factory=list, max_length=BREAK_GLASS_USES_KEPT
    )
    break_glass_requests: list[BreakGlassRequest] = Field(
        default_factory=list,
        max_length=BREAK_GLASS_REQUESTS_MAX,
        description="Break-glass requests waiting for their quorum's approvals, or used",
    )
    conditions: list[Condition] = Field(default_factory=list)
    alerting: dict[str, list[AlertKind]] = Field(
        default_factory=dict,
        description="Accounts with an alert raised, as the reconciler last announced them",
    )
    exhausted_accounts: int = 0
    lowest_balance: Amount | None = None
    agents: Agents = Field(default_factory=dict)
    spent_by: SpentBy = Field(default_factory=SpentBy)


__all__ = [
    "TEMPLATE_VARIABLE",
    "TEMPLATE_VARIABLES",
    "Alerts",
    "Approval",
    "BreakGlass",
    "BreakGlassRequest",
    "BreakGlassUse",
    "CertManager",
    "CostOverride",
    "NamedResource",
    "Quorum",
    "RapidDepletion",
    "RateLimit",
    "ResourceMatch",
    "Sessions",
    "SubjectSet",
    "Subjects",
    "TrustBudgetSpec",
    "TrustBudgetStatus",
    "account_key_pattern",
]
