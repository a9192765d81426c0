"""BudgetLease objects as records of the leases in a TrustBudget's ledger.

The ledger is where a lease's money moves (one compare-and-swap of the budget); the object
is what people and tools see with `kubectl get budgetleases`. These functions say what the
object of a lease should hold, so the mirror that writes them only compares and sends.
"""

from __future__ import annotations

from typing import Any

from budgetops.apis.common import API_VERSION, format_duration, format_time
from budgetops.apis.ledger import LeaseHold

PHASES = {"released": "Released", "expired": "Expired", "revoked": "Revoked"}
HOLDER_KIND = "llm-runtime"
LABEL_MAX = 63


def object_name(lease_id: str) -> str:
    """`lease_<uuid>` as an object name: `lease-<uuid>`."""
    return lease_id.replace("_", "-", 1)


def phase(hold: LeaseHold) -> str:
    if hold.state != "active":
        return PHASES[hold.state]
    return "Exhausted" if hold.amount <= 0 else "Active"


def status_of(hold: LeaseHold) -> dict[str, Any]:
    return {
        "phase": phase(hold),
        "granted": str(hold.granted),
        "spent": str(hold.spent),
        "remaining": str(hold.amount),
        "lateSpent": str(hold.late_spent),
        "expiresAt": format_time(hold.expires_at),
        "reportedRequests": (
            hold.reported_through + len(hold.counted_above) + len(hold.unnumbered())
        ),
    }


def manifest(
    *, budget: str, account: str, lease_id: str, hold: LeaseHold, namespace: str
) -> dict[str, Any]:
    """The BudgetLease object of one lease (without status: that is written separately)."""
    ttl = hold.expires_at - hold.created_at if hold.created_at else None
    spec: dict[str, Any] = {
        "budgetRef": {"kind": "TrustBudget", "name": budget, "account": account},
        "holder": {"kind": HOLDER_KIND, "id": hold.holder or account},
        "amount": str(hold.granted),
    }
    if ttl is not None and ttl.total_seconds() >= 1:
        spec["ttl"] = format_duration(ttl)
    return {
        "apiVersion": API_VERSION,
        "kind": "BudgetLease",
        "metadata": {
            "name": object_name(lease_id),
            "namespace": namespace,
            "labels": {
                key: value
                for key, value in (
                    ("budgetops.dev/budget", budget),
                    ("budgetops.dev/agent", account),
                )
                if len(value) <= LABEL_MAX
            },
            "annotations": {"budgetops.dev/lease-id": lease_id},
        },
        "spec": spec,
    }
