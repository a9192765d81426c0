"""What each lease API call does, over any BudgetStore: verify, charge in one write, answer.

Every movement of money happens inside one compare-and-swap of the agent's TrustBudget,
and the token is checked against the agent's record inside that same write, so a report
racing a revocation is either counted before it or refused after it. An answer is sent only
once its write is stored: an acknowledged dollar is never lost.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Any, Protocol, TypeVar

from budgetops.apis.agents import Agent, ProviderKey
from budgetops.apis.common import format_time
from budgetops.apis.leaseprotocol import (
    HandshakeRequest,
    RefreshRequest,
    ReleaseRequest,
    ReportRequest,
)
from budgetops.apis.ledger import LeaseHold
from budgetops.apis.resources import Budget, BudgetKey, TrustBudget
from budgetops.crypto import sealing, tokens
from budgetops.engine import agents, leases, sessions, spending
from budgetops.engine.clock import Clock
from budgetops.engine.ledger import InvalidCharge
from budgetops.engine.rollover import trust_account
from budgetops.store import BudgetStore, ChargeTimeout, NotFound

log = logging.getLogger("budgetops.leaseapi")

T = TypeVar("T")

SIGNING_KEY_SECRET = "budgetops-agent-signing-key"
SIGNING_KEY_FIELD = "key"
SIGNING_KEY_SECONDS = 10.0
"""How long a read signing key is used before it is read again: a rotated key applies
within this, and reports do not each cost a Secret read."""
WRITE_SECONDS = 5.0


class ApiError(Exception):
    """An answer other than 200: its HTTP status, protocol code, a message to show and the
    headers HTTP asks for (`Allow` with a 405)."""

    def __init__(
        self, status: int, code: str, message: str, *, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = headers


class SecretSource(Protocol):
    def read(self, namespace: str, name: str, key: str) -> str:
        """One key of a Secret; LookupError (naming it, never its value) when it cannot."""
        ...


class SecretStore(SecretSource, Protocol):
    def write(self, namespace: str, name: str, key: str, value: str) -> None:
        """Create a Secret key (LookupError when it cannot)."""
        ...


def read_signing_key(secrets: SecretSource, namespace: str) -> bytes:
    """The key agent tokens are signed with; LookupError, or ValueError when it is not hex."""
    return bytes.fromhex(secrets.read(namespace, SIGNING_KEY_SECRET, SIGNING_KEY_FIELD).strip())


def signing_key(secrets: SecretStore, namespace: str) -> bytes:
    """The signing key, made (32 random bytes) the first time."""
    try:
        return read_signing_key(secrets, namespace)
    except LookupError:
        fresh = tokens.new_signing_key().hex()
        secrets.write(namespace, SIGNING_KEY_SECRET, SIGNING_KEY_FIELD, fresh)
        return read_signing_key(secrets, namespace)


@dataclass(frozen=True)
class LeaseSettings:
    issuer: str = tokens.DEFAULT_ISSUER
    ttl: timedelta = timedelta(hours=1)
    namespace: str = "budgetops-system"
    """Where the signing key and provider key Secrets live."""


@dataclass(frozen=True)
class Lent:
    """What a grant did to the agent's account; `hold` is None when nothing was left."""

    lease_id: str
    granted: Decimal
    hold: LeaseHold | None
    totals: dict[str, Decimal]
    terms: dict[str, Any]
    """The limits of the runtime's calls under this budget (`sessions.lease_terms`)."""


def invalid_token(message: str) -> ApiError:
    return ApiError(401, "INVALID_TOKEN", message)


def _authorized(budget: TrustBudget, claims: tokens.AgentClaims) -> Agent:
    """The agent the token speaks for, checked against its record in `budget`."""
    try:
        return agents.authorize(
            budget.status,
            agent_id=claims.agent_id,
            budget_id=claims.budget_id,
            token_id=claims.token_id,
        )
    except agents.NotAuthorized as error:
        raise invalid_token(str(error)) from None


def _reporter(lease_id: str) -> Callable[[TrustBudget, tokens.AgentClaims], Agent]:
    """Who may report on `lease_id`: the agent's current token, or the token the lease was
    granted under once a rotation or revocation closed it, so that what the runtime spent
    before the close still reaches the ledger (the engine counts only calls stamped before
    the close, within the lease's grace)."""

    def authorize(budget: TrustBudget, claims: tokens.AgentClaims) -> Agent:
        try:
            return _authorized(budget, claims)
        except ApiError:
            account = budget.status.accounts.get(claims.agent_id)
            hold = None if account is None else account.leases.get(lease_id)
            agent = budget.status.agents.get(claims.agent_id)
            if (
                agent is None
                or hold is None
                or hold.state == "active"
                or not hold.token
                or agent.budget_id != claims.budget_id
                or not hmac.compare_digest(hold.token.encode(), claims.token_id.encode())
            ):
                raise
            return agent

    return authorize


def lease_view(lease_id: str, agent_id: str, agent: Agent, hold: LeaseHold) -> dict[str, Any]:
    return {
        "lease_id": lease_id,
        "agent_id": agent_id,
        "budget_id": agent.budget_id,
        "status": hold.state,
        "granted": hold.granted,
        "spent": hold.spent,
        "remaining": hold.amount,
        "late_spent": hold.late_spent,
        "reported_through": hold.reported_through,
        "created_at": format_time(hold.created_at) if hold.created_at else None,
        "expires_at": format_time(hold.expires_at),
    }


def _not_yours(lease_id: str, agent_id: str) -> ApiError:
    """A lease the agent does not hold: never granted to it, or closed long ago. Whether
    another agent holds it is not looked up: that read every TrustBudget on each such call,
    and told an agent which lease ids exist elsewhere."""
    return ApiError(
        404,
        "LEASE_NOT_FOUND",
        f"{agent_id} holds no lease {lease_id} (never granted to it, or closed long ago)",
    )


class LeaseService:
    """The lease API's operations; the HTTP layer (`leaseapi.app`) only parses and routes."""

    def __init__(
        self,
        store: BudgetStore,
        secrets: SecretSource,
        *,
        clock: Clock,
        settings: LeaseSettings = LeaseSettings(),
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.secrets = secrets
        self.clock = clock
        self.settings = settings
        self.monotonic = monotonic
        self._key: tuple[float, bytes] | None = None
        self._budgets: dict[str, BudgetKey] = {}

    # Identity ---------------------------------------------------------------------------

    async def signing_key(self) -> bytes:
        """The signing key, read again (off the event loop) every SIGNING_KEY_SECONDS."""
        cached = self._key
        if cached is not None and self.monotonic() - cached[0] < SIGNING_KEY_SECONDS:
            return cached[1]
        key = await asyncio.to_thread(self._read_signing_key)
        self._key = (self.monotonic(), key)
        return key

    def _read_signing_key(self) -> bytes:
        try:
            return read_signing_key(self.secrets, self.settings.namespace)
        except (LookupError, ValueError) as error:
            log.error("cannot read the agent signing key: %s", error)
            raise ApiError(
                503, "UNAVAILABLE", "the agent signing key cannot be read; retry later"
            ) from None

    async def verify(self, token: str) -> tokens.AgentClaims:
        key = await self.signing_key()
        try:
            return tokens.verify(token, key=key, issuer=self.settings.issuer, now=self.clock())
        except tokens.InvalidToken as error:
            raise invalid_token(str(error)) from None

    def budget_of(self, agent_id: str) -> BudgetKey:
        """The TrustBudget an agent belongs to (remembered; looked up again if it moved)."""
        known = self._budgets.get(agent_id)
        if known is not None:
            return known
        for budget in self.store.list("TrustBudget"):
            assert isinstance(budget, TrustBudget)
            if agent_id in budget.status.agents:
                key = self._budgets[agent_id] = BudgetKey.of(budget)
                return key
        raise invalid_token(f"{agent_id} is not an agent of any budget (deleted?)")

    async def _change(
        self,
        claims: tokens.AgentClaims,
        change: Callable[[TrustBudget, Agent], T],
        *,
        needs_write: Callable[[T], bool],
        authorize: Callable[[TrustBudget, tokens.AgentClaims], Agent] = _authorized,
    ) -> tuple[BudgetKey, T]:
        """Run `change` in one write of the agent's budget, after checking the token there."""
        key = self.budget_of(claims.agent_id)

        def checked(budget: Budget) -> T:
            assert isinstance(budget, TrustBudget)
            return change(budget, authorize(budget, claims))

        try:
            result = await self.store.update_status_async(
                key, checked, timeout=WRITE_SECONDS, needs_write=needs_write
            )
        except NotFound:
            self._budgets.pop(claims.agent_id, None)
            raise invalid_token(f"{claims.agent_id}'s budget {key} no longer exists") from None
        except ChargeTimeout:
            raise ApiError(
                503, "UNAVAILABLE", f"{key} could not be written in time; retry"
            ) from None
        except InvalidCharge as error:
            raise ApiError(400, "INVALID_REQUEST", str(error)) from None
        except leases.UnknownLease as error:
            raise _not_yours(str(error.args[0]), claims.agent_id) from None
        except leases.TooManyLeases as error:
            raise ApiError(409, "TOO_MANY_LEASES", str(error)) from None
        return key, result

    def _grant(
        self, budget: TrustBudget, claims: tokens.AgentClaims, requested: Decimal, holder: str
    ) -> Lent:
        """Roll the account (an admin's new allocation applies here) and lend from it."""
        now = self.clock()
        agent_id = claims.agent_id
        trust_account(budget.status, budget.spec, key=agent_id, now=now)
        lease_id = f"lease_{uuid.uuid4()}"
        granted = leases.grant(
            budget.status,
            account=agent_id,
            lease_id=lease_id,
            requested=requested,
            now=now,
            ttl=self.settings.ttl,
            holder=holder,
            agent=agent_id,
            token=claims.token_id,
        )
        account = budget.status.accounts[agent_id]
        totals = {
            "budget_remaining": account.balance,
            "total_allocated": account.allocation,
            "total_spent": account.spent,
            "leased_out": account.leased_out,
        }
        terms = sessions.lease_terms(budget.spec.sessions)
        return Lent(lease_id, granted, account.leases.get(lease_id), totals, terms)

    # Operations -------------------------------------------------------------------------

    async def handshake(self, request: HandshakeRequest) -> dict[str, Any]:
        claims = await self.verify(request.ic_token)
        key = self.budget_of(claims.agent_id)
        provider, provider_key = await asyncio.to_thread(
            self._provider_key, key, claims.agent_id, request.provider
        )
        holder = request.runtime_id or claims.agent_id

        def lend(budget: TrustBudget, _: Agent) -> Lent:
            return self._grant(budget, claims, request.requested_budget, holder)

        _, lent = await self._change(claims, lend, needs_write=lambda result: result.granted > 0)
        hold, totals, lease_id = lent.hold, lent.totals, lent.lease_id
        if hold is None:
            raise ApiError(
                403,
                "BUDGET_EXCEEDED",
                f"nothing is left to lease from {claims.agent_id}'s budget of "
                f"{totals['total_allocated']:.2f} USD: {totals['total_spent']:.2f} USD is spent "
                f"and {totals['leased_out']:.2f} USD is leased out to open leases (it returns "
                "when they are released or expire)",
            )
        sealed = sealing.seal(provider_key, identity_token=request.ic_token, lease_id=lease_id)
        answer: dict[str, Any] = {
            "ip_token": sealed.text,
            "key_salt": sealed.salt_b64,
            "budget_granted": lent.granted,
            "budget_remaining": totals["budget_remaining"],
            "lease_id": lease_id,
            "provider": provider.provider,
            "expires_at": format_time(hold.expires_at),
            **lent.terms,
        }
        if provider.provider_model:
            answer["provider_model"] = provider.provider_model
        return answer

    def _provider_key(
        self, key: BudgetKey, agent_id: str, name: str | None
    ) -> tuple[ProviderKey, str]:
        """The provider asked for (the agent's first when None) and its key, read before
        anything is charged, so a missing Secret or an unknown provider lends nothing."""
        budget = self.store.get(key, account=agent_id)
        assert isinstance(budget, TrustBudget)
        agent = budget.status.agents.get(agent_id)
        if agent is None:
            raise invalid_token(f"{agent_id} is not an agent of {key} any more")
        try:
            provider = agent.provider_named(name)
        except LookupError as error:
            raise ApiError(400, "INVALID_REQUEST", f"provider: {agent_id} {error}") from None
        ref = provider.provider_key
        try:
            return provider, self.secrets.read(self.settings.namespace, ref.name, ref.key)
        except LookupError as error:
            log.error("handshake of %s: the provider key cannot be read: %s", agent_id, error)
            raise ApiError(
                503,
                "HANDSHAKE_FAILED",
                f"the provider key of {agent_id} cannot be read; ask an administrator to "
                f"check Secret {ref.name} (key {ref.key})",
            ) from None

    async def report(self, token: str, request: ReportRequest) -> dict[str, Any]:
        claims = await self.verify(token)
        usages = [
            leases.Usage(r.request_id, r.seq, r.cost_usd, r.timestamp) for r in request.reports
        ]

        costs = {r.request_id: r.cost_usd for r in request.reports}

        def count(
            budget: TrustBudget, agent: Agent
        ) -> tuple[leases.Counted, list[sessions.UsageWarning], list[str]]:
            try:
                counted = leases.report(
                    budget.status,
                    account=claims.agent_id,
                    lease_id=request.lease_id,
                    usages=usages,
                    now=self.clock(),
                )
            except leases.OutOfOrder as error:
                raise ApiError(409, "REPORT_OUT_OF_ORDER", str(error)) from None
            except leases.Conflict as error:
                raise ApiError(409, "REPORT_CONFLICT", str(error)) from None
            except leases.TooManyUnnumbered as error:
                raise ApiError(409, "TOO_MANY_UNNUMBERED", str(error)) from None
            except leases.LeaseClosed as error:
                raise ApiError(409, "LEASE_CLOSED", str(error)) from None
            if counted.accepted:
                self._tally(budget, agent, request, counted)
            limits = budget.spec.sessions
            warned = sessions.warnings(
                limits,
                lease_id=request.lease_id,
                hold=counted.hold,
                account=claims.agent_id,
                of=budget.status.accounts[claims.agent_id],
            )
            return counted, warned, sessions.over_cap(limits, costs)

        _, (counted, warned, over) = await self._change(
            claims,
            count,
            needs_write=lambda c: c[0].accepted > 0,
            authorize=_reporter(request.lease_id),
        )
        answer: dict[str, Any] = {
            "lease_id": request.lease_id,
            "accepted": counted.accepted,
            "duplicates": counted.duplicates,
            "spent": counted.hold.spent,
            "remaining": counted.hold.amount,
        }
        if counted.uncovered:
            answer["uncovered"] = counted.uncovered
        if warned:
            answer["warnings"] = [warning.to_wire() for warning in warned]
        if over:
            log.warning(
                "%s reported %d calls above its budget's maxCallCost: %s",
                claims.agent_id,
                len(over),
                ", ".join(over[:10]),
            )
            answer["over_max_call_cost"] = over
        if counted.late:
            answer["late"] = counted.late
        return answer

    @staticmethod
    def _tally(
        budget: TrustBudget, agent: Agent, request: ReportRequest, counted: leases.Counted
    ) -> None:
        """Informative totals by provider and project, and their progress against the spec's
        informative allocations: reported cost up to what was counted (a record past the
        lease's grant is not money the budget paid)."""
        left = counted.spent
        for record in request.reports:
            amount = min(record.cost_usd, left)
            left -= amount
            agents.tally(
                budget.status.spent_by,
                provider=record.provider,
                project=agent.project,
                amount=amount,
            )
        spending.measure(budget.status.spent_by, budget.spec.informative_allocations)

    async def refresh(self, token: str, request: RefreshRequest) -> dict[str, Any]:
        claims = await self.verify(token)
        if request.budget_id != claims.budget_id:
            raise ApiError(403, "LEASE_FORBIDDEN", "budget_id is not the token's budget")

        def lend(budget: TrustBudget, _: Agent) -> Lent:
            current = leases.find_lease(
                budget.status, account=claims.agent_id, lease_id=request.lease_id
            )
            return self._grant(budget, claims, request.requested_budget, current.holder)

        _, lent = await self._change(claims, lend, needs_write=lambda lent: lent.granted > 0)
        hold, totals = lent.hold, lent.totals
        if hold is None:
            return {"status": "denied", "reason": "total_budget_exhausted", **totals}
        return {
            "status": "approved",
            "budget_granted": lent.granted,
            "lease_id": lent.lease_id,
            "expires_at": format_time(hold.expires_at),
            **totals,
            **lent.terms,
        }

    async def release(self, token: str, request: ReleaseRequest) -> dict[str, Any]:
        claims = await self.verify(token)

        def give_back(budget: TrustBudget, _: Agent) -> tuple[bool, Decimal, LeaseHold, Decimal]:
            hold = leases.find_lease(
                budget.status, account=claims.agent_id, lease_id=request.lease_id
            )
            was_open = hold.state == "active"
            returned = leases.close(
                budget.status,
                account=claims.agent_id,
                lease_id=request.lease_id,
                now=self.clock(),
                state="released",
            )
            return was_open, returned, hold, budget.status.accounts[claims.agent_id].balance

        _, (_, returned, hold, balance) = await self._change(
            claims, give_back, needs_write=lambda result: result[0]
        )
        return {
            "lease_id": request.lease_id,
            "status": hold.state,
            "returned": returned,
            "spent": hold.spent,
            "budget_remaining": balance,
        }

    async def lease(self, token: str, lease_id: str) -> dict[str, Any]:
        claims = await self.verify(token)
        key = self.budget_of(claims.agent_id)
        try:
            budget = self.store.get(key, account=claims.agent_id)
        except NotFound:
            raise invalid_token(f"{claims.agent_id}'s budget no longer exists") from None
        assert isinstance(budget, TrustBudget)
        agent = _authorized(budget, claims)
        try:
            hold = leases.find_lease(budget.status, account=claims.agent_id, lease_id=lease_id)
        except leases.UnknownLease:
            raise _not_yours(lease_id, claims.agent_id) from None
        return lease_view(lease_id, claims.agent_id, agent, hold)
