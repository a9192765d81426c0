"""Break-glass quorum: requests that wait for approvals, the approvals, and what to announce.
Pure.

A break-glass ask on a budget whose `breakGlass.quorum` is set passes only through a request
that enough distinct approvers named in the quorum (never the requester) approved before its
deadline, and then only once. Admission opens the request (`await_quorum`, in the denial's
own status write), the operator records each approval (`approve`), and the reconciler tells
the notification channels of each step (`announce`) and drops requests past their deadline.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime

from budgetops.apis.common import format_time
from budgetops.apis.names import shown
from budgetops.apis.trustbudget import (
    BREAK_GLASS_REQUESTS_MAX,
    Approval,
    BreakGlassRequest,
    Quorum,
    TrustBudgetSpec,
    TrustBudgetStatus,
)
from budgetops.engine.audit import note
from budgetops.engine.notices import Notice

REQUESTED, APPROVED = 1, 2
"""What `BreakGlassRequest.announced` says the channels were told."""


def request_id(budget: str, account: str, user: str, ref: str, at: datetime) -> str:
    """A request's id: short enough to type, and distinct for each ask of each budget."""
    asked = f"{budget}/{account}/{user}/{ref}/{at.isoformat()}"
    return f"bg-{hashlib.sha256(asked.encode()).hexdigest()[:10]}"


def approve_command(budget: str, request: BreakGlassRequest) -> str:
    return f"kubectl budget approve {budget} {request.id}"


def _approvers(request: BreakGlassRequest) -> str:
    return ", ".join(shown(a.approver) for a in request.approvals) or "none yet"


def drop_expired(status: TrustBudgetStatus, now: datetime) -> bool:
    """Take out the requests whose deadline passed, used or not; True if there were any."""
    kept = [r for r in status.break_glass_requests if now < r.deadline]
    if len(kept) == len(status.break_glass_requests):
        return False
    status.break_glass_requests = kept
    return True


def next_deadline(status: TrustBudgetStatus) -> datetime | None:
    """When `drop_expired` next has something to do."""
    return min((r.deadline for r in status.break_glass_requests), default=None)


def await_quorum(
    status: TrustBudgetStatus,
    quorum: Quorum,
    *,
    budget: str,
    account: str,
    user: str,
    reason: str,
    ref: str,
    now: datetime,
    dry_run: bool,
) -> tuple[BreakGlassRequest | None, str | None]:
    """The open request of this requester on this account for this object (approvers
    approve what they were shown: nothing else passes on it) and, unless its approvals are
    enough (it may pass), what they still wait for. Without one, a request is opened (not
    in a dry run), to be stored with the denial that names it."""
    drop_expired(status, now)
    request = next(
        (
            r
            for r in status.break_glass_requests
            if r.account == account and r.user == user and r.object == ref and r.used_at is None
        ),
        None,
    )
    required = quorum.required
    if request is not None:
        have = len(request.approvals)
        if have >= required:
            return request, None
        return request, (
            f"request {request.id} has {have} of the {required} approvals it needs "
            f"({_approvers(request)}); {required - have} more from "
            f"{quorum.approvers.describe()} by {format_time(request.deadline)}: "
            f"{approve_command(budget, request)}, then send this request again"
        )
    wanted = f"this budget requires {required} approvals from {quorum.approvers.describe()}"
    if dry_run:
        return None, f"{wanted}; a dry run opens no request for them"
    if len(status.break_glass_requests) >= BREAK_GLASS_REQUESTS_MAX:
        return None, (
            f"{wanted}, and the budget holds {BREAK_GLASS_REQUESTS_MAX} break-glass requests "
            "already; ask again once one is used or past its deadline"
        )
    request = BreakGlassRequest(
        id=request_id(budget, account, user, ref, now),
        account=account,
        user=user,
        reason=reason,
        object=ref,
        requested_at=now,
        deadline=now + quorum.approval_window,
    )
    status.break_glass_requests = [*status.break_glass_requests, request]
    return request, (
        f"{wanted}. Request {request.id} is open until {format_time(request.deadline)}; each "
        f"approver runs: {approve_command(budget, request)}. Then send this request again"
    )


@dataclass(frozen=True)
class Approved:
    """What became of one approval: counted or not, and the words that say so."""

    recorded: bool
    message: str
    reached: bool = False
    """This approval completed the quorum."""


def approve(
    status: TrustBudgetStatus,
    spec: TrustBudgetSpec,
    *,
    budget: str,
    request_id: str,
    approver: str,
    groups: list[str],
    now: datetime,
) -> Approved:
    """Record `approver`'s approval of a request, audited (`break-glass-approved`), when it
    counts: the request is open, the approver is named in the quorum, is not the requester
    and has not approved it yet (approving twice counts once, and says so)."""
    rules = spec.break_glass
    quorum = rules.quorum if rules is not None else None
    if quorum is None:
        return Approved(False, f"TrustBudget {budget} requires no approvals for break-glass")
    request = next((r for r in status.break_glass_requests if r.id == request_id), None)
    if request is None or now >= request.deadline:
        return Approved(
            False,
            f"TrustBudget {budget} has no open break-glass request {request_id}: its deadline "
            "passed, or it never existed; the requester asks again for a new one",
        )
    if request.used_at is not None:
        return Approved(
            False, f"{request_id} was used at {format_time(request.used_at)}; it passes once"
        )
    if approver == request.user:
        return Approved(
            False, f"{shown(approver)} asked for {request_id}: nobody approves their own"
        )
    if not quorum.approvers.names(approver, groups):
        return Approved(
            False,
            f"{shown(approver)} is not among the approvers of TrustBudget {budget} "
            f"({quorum.approvers.describe()})",
        )
    have = len(request.approvals)
    if any(a.approver == approver for a in request.approvals):
        return Approved(
            True, f"{shown(approver)}'s approval of {request_id} was recorded already ({have} "
            f"of {quorum.required})"
        )  # fmt: skip
    if have >= quorum.required:
        return Approved(False, f"{request_id} has the {quorum.required} approvals it needs")
    request.approvals = [*request.approvals, Approval(approver=approver, at=now)]
    have += 1
    note(
        status,
        at=now,
        action="break-glass-approved",
        account=request.account,
        ref=request.object,
        detail={
            "request": request_id,
            "approver": approver,
            "user": request.user,
            "approvals": have,
            "required": quorum.required,
        },
    )
    reached = have >= quorum.required
    after = (
        f"it may pass once, until {format_time(request.deadline)}"
        if reached
        else f"{quorum.required - have} more needed by {format_time(request.deadline)}"
    )
    return Approved(
        True, f"{shown(approver)}'s approval of {request_id} recorded ({have} of "
        f"{quorum.required}): {after}", reached
    )  # fmt: skip


def announce(
    status: TrustBudgetStatus, spec: TrustBudgetSpec, *, budget: str, now: datetime
) -> list[Notice]:
    """Notices of what the channels were not told yet: a request opened, a quorum reached, a
    break-glass use; each marked told in the status the notices are written with."""
    name = budget.rpartition(" ")[2]  # `TrustBudget certs`: the kubectl name is the last word
    quorum = spec.break_glass.quorum if spec.break_glass is not None else None
    required = quorum.required if quorum is not None else 0
    notices = []
    for request in status.break_glass_requests:
        reached = APPROVED if required and len(request.approvals) >= required else REQUESTED
        who = f"{request.account}: {shown(request.user)}"
        if request.announced < REQUESTED:
            notices.append(
                Notice(
                    budget,
                    "BreakGlassRequested",
                    f"{who} asks to break the glass ({shown(request.reason)}); request "
                    f"{request.id} needs {required} approvals by {format_time(request.deadline)}",
                    severity="warning",
                    at=request.requested_at,
                    details=(f"Approvers run: {approve_command(name, request)}",),
                    headline=f"Break-glass approval requested for {request.account}",
                )
            )
        if request.announced < reached == APPROVED:
            notices.append(
                Notice(
                    budget,
                    "BreakGlassApproved",
                    f"{who}'s request {request.id} approved by {_approvers(request)}; it may "
                    f"pass once until {format_time(request.deadline)}",
                    severity="warning",
                    at=now,
                    headline=f"Break-glass approved for {request.account}",
                )
            )
        request.announced = max(request.announced, reached)
    for use in status.break_glass_uses:
        if use.announced:
            continue
        approved = f" (approved by {', '.join(map(shown, use.approvers))})" if use.approvers else ""
        notices.append(
            Notice(
                budget,
                "BreakGlassUsed",
                f"{use.account}: break-glass used by {shown(use.user)} for "
                f"{use.object or 'a request'}{approved}: {shown(use.reason)}",
                severity="critical",
                at=use.at,
                headline=f"Break-glass used for {use.account}",
            )
        )
        use.announced = True
    return notices
