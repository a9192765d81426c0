"""Conditions the Kubernetes way: `lastTransitionTime` moves only when the status flips."""

from __future__ import annotations

from datetime import datetime

from budgetops.apis.common import Condition, ConditionStatus


def set_condition(
    conditions: list[Condition],
    *,
    type: str,
    status: ConditionStatus,
    reason: str,
    message: str,
    now: datetime,
    generation: int | None,
) -> bool:
    """Put the condition of `type` into `conditions`; True when anything about it changed."""
    for index, old in enumerate(conditions):
        if old.type != type:
            continue
        if (old.status, old.reason, old.message, old.observed_generation) == (
            status,
            reason,
            message,
            generation,
        ):
            return False
        since = old.last_transition_time if old.status == status else now
        conditions[index] = Condition(
            type=type,
            status=status,
            reason=reason,
            message=message,
            last_transition_time=since,
            observed_generation=generation,
        )
        return True
    conditions.append(
        Condition(
            type=type,
            status=status,
            reason=reason,
            message=message,
            last_transition_time=now,
            observed_generation=generation,
        )
    )
    return True


def is_true(conditions: list[Condition], type: str) -> bool:
    """Whether the condition of `type` is present and True."""
    return any(c.type == type and c.status == "True" for c in conditions)
