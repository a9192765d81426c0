"""BudgetApproval: one person's approval of a break-glass request, as a Kubernetes object.

Who may create one is cluster policy (RBAC on `budgetapprovals`, the chart's ClusterRole
`budgetops-approver`); who it is from, the API server says: the chart's
ValidatingAdmissionPolicy admits one only when `spec.approver` is the caller's own username
and `spec.groups` are among the caller's groups. The operator records it into the
TrustBudget's request and answers in `status`.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, StringConstraints

from budgetops.apis.common import NAME_PATTERN, Model, Timestamp, cel

REQUEST_ID_PATTERN = r"^bg-[0-9a-f]{10}$"
"""A break-glass request's id: `bg-` and ten hex digits (`engine/breakglass.request_id`)."""


class BudgetApprovalSpec(Model):
    """Which request of which TrustBudget is approved, and by whom (checked at creation)."""

    model_config = cel(
        ("self == oldSelf", "a BudgetApproval cannot be changed: delete it and create another")
    )

    budget: str = Field(min_length=1, max_length=253, pattern=NAME_PATTERN)
    request: str = Field(pattern=REQUEST_ID_PATTERN, max_length=13)
    approver: str = Field(min_length=1, max_length=253)
    groups: list[Annotated[str, StringConstraints(max_length=253)]] = Field(
        default_factory=list,
        max_length=64,
        description="The approver's groups a quorum may name them by (each one of theirs)",
    )


class BudgetApprovalStatus(Model):
    """Whether the operator counted the approval, and why not when it did not."""

    recorded: bool | None = None
    message: str = Field(default="", max_length=1024)
    at: Timestamp | None = None
