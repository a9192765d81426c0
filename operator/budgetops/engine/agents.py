"""Agents of a USD TrustBudget: adding one, rotating or revoking its token, and knowing it.

Each function changes one budget's status, so the store's compare-and-swap makes it atomic:
a token rotated or revoked closes the agent's leases in the same write, and a lease request
checks the token against the record in the write that charges it.
"""

from __future__ import annotations

import hmac
from datetime import datetime
from decimal import Decimal

from budgetops.apis.agents import OTHER, TOTALS_KEPT, Agent, SpentBy
from budgetops.apis.trustbudget import TrustBudgetSpec, TrustBudgetStatus
from budgetops.engine import leases
from budgetops.engine.rollover import trust_account


class UnknownAgent(LookupError):
    """No agent of that id in the budget."""


class NotAuthorized(PermissionError):
    """The token is not (or no longer) the agent's; the message says which check failed."""


def add_agent(
    status: TrustBudgetStatus,
    spec: TrustBudgetSpec,
    *,
    agent_id: str,
    agent: Agent,
    now: datetime,
) -> None:
    """Open the agent's account (one agent, one budget) and record it."""
    if spec.unit != "USD":
        raise ValueError(f"agents spend dollars: the budget's unit is {spec.unit}, not USD")
    if agent_id in status.agents:
        raise ValueError(f"{agent_id} exists already; rotate its token instead")
    trust_account(status, spec, key=agent_id, now=now)
    status.agents[agent_id] = agent


def find_agent(status: TrustBudgetStatus, agent_id: str) -> Agent:
    agent = status.agents.get(agent_id)
    if agent is None:
        raise UnknownAgent(agent_id)
    return agent


def rotate(
    status: TrustBudgetStatus,
    *,
    agent_id: str,
    token_id: str,
    issued_at: datetime,
    expires_at: datetime | None,
    now: datetime,
) -> int:
    """Make `token_id` the agent's only valid token; every lease of the old one closes and
    returns its rest. Returns how many leases closed."""
    agent = find_agent(status, agent_id)
    agent.token_id, agent.issued_at, agent.expires_at = token_id, issued_at, expires_at
    agent.revoked_at = None
    return leases.close_agent(status, account=agent_id, now=now, state="revoked")


def revoke(status: TrustBudgetStatus, *, agent_id: str, now: datetime) -> int:
    """Refuse the agent's token from now on and close its leases; returns how many closed."""
    find_agent(status, agent_id).revoked_at = now
    return leases.close_agent(status, account=agent_id, now=now, state="revoked")


def authorize(status: TrustBudgetStatus, *, agent_id: str, budget_id: str, token_id: str) -> Agent:
    """The agent a verified token speaks for, if it is still the agent's current token."""
    agent = status.agents.get(agent_id)
    if agent is None:
        raise NotAuthorized(f"{agent_id} is not an agent of this budget (deleted?)")
    if agent.revoked_at is not None:
        raise NotAuthorized(f"{agent_id}'s token was revoked")
    if not hmac.compare_digest(agent.token_id.encode(), token_id.encode()):
        raise NotAuthorized(f"this token of {agent_id} was replaced by a newer one")
    if agent.budget_id != budget_id:
        raise NotAuthorized(f"the token's budget_id is not {agent_id}'s")
    return agent


def tally(spent_by: SpentBy, *, provider: str, project: str, amount: Decimal) -> None:
    """Add reported spending to the informative totals (by provider, by project, in all)."""
    if amount <= 0:
        return
    spent_by.total += amount
    for totals, name in ((spent_by.providers, provider), (spent_by.projects, project or OTHER)):
        key = name if name in totals or len(totals) < TOTALS_KEPT else OTHER
        totals[key] = totals.get(key, Decimal(0)) + amount
