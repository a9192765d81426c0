"""`budgetops agent create|set|rotate|revoke|list`: agents of a USD TrustBudget, their
tokens and allocations.

On the embedded ledger, the signing key and the provider keys are files in the secrets
folder beside it (`<ledger>.secrets/<name>/<key>`, the layout of a mounted Secret), which
`budgetops serve` reads. With `--kubeconfig`, the budget is read and written through the
API server (the same compare-and-swap store as the webhook) and the keys are Secrets in
`--namespace`. Each change is one write of the budget's status (`usecases.administering`):
a rotation or revocation closes the agent's leases in the same write. An agent's own
allocation is the budget's spec (`spec.agentAllocations`), written before the status.
"""

from __future__ import annotations

import argparse
import contextlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, TextIO

from pydantic import ValidationError

from budgetops.adapters.filesecrets import FileSecrets
from budgetops.adapters.keyfolder import embedded_keys
from budgetops.apis.agents import Agent, ProviderKey
from budgetops.apis.common import (
    GROUP,
    VERSION,
    SecretKeyRef,
    format_time,
    parse_amount,
    parse_duration,
)
from budgetops.apis.names import shown
from budgetops.apis.resources import RESOURCES, BudgetKey, TrustBudget, field_errors
from budgetops.crypto import tokens
from budgetops.engine.clock import system_clock
from budgetops.store import BudgetStore, NotFound
from budgetops.store.audit import AuditTrail
from budgetops.usecases import administering
from budgetops.usecases.leasing import SecretStore, signing_key

from . import stores
from .signing import head_signer
from .target import cluster_api, held_trail


def secrets_dir(ledger: Path, given: str | None) -> Path:
    return Path(given) if given else ledger.with_name(ledger.name + ".secrets")


Allocate = Callable[[str, str, Decimal | None], None]
"""Write (or, with None, remove) `spec.agentAllocations[agent]` of a TrustBudget."""


@dataclass
class Where:
    """The budget store and the Secrets the command works on, and how its budgets' specs
    take an agent's allocation."""

    store: BudgetStore
    secrets: SecretStore
    namespace: str
    allocate: Allocate


@contextlib.contextmanager
def where(args: argparse.Namespace, ledger: Path, *, writes: bool = True) -> Iterator[Where]:
    if args.kubeconfig is not None:  # "" in the kubectl plugin: the current cluster
        from budgetops.adapters.secrets import KubeSecrets

        api = cluster_api(args)
        secrets = KubeSecrets(api)
        signed = head_signer(secrets, args.namespace, make=False) if writes else None
        with stores.cluster_store(api, held_trail(signed)) as store:
            yield Where(store, secrets, args.namespace, _patching(api))
        return
    keys = embedded_keys(ledger, args.verdict_keys)
    with stores.ledger(ledger, "write" if writes else "read") as sqlite:
        if writes:  # the heads it moves are signed like the server's
            sqlite.trail = AuditTrail(checkpoints=head_signer(keys, "", make=True))
        files = FileSecrets(secrets_dir(ledger, args.secrets_dir))
        yield Where(sqlite, files, "", _applying(sqlite))


def _patching(api: Any) -> Allocate:
    """A merge patch of the one allocation: it cannot undo a concurrent edit of the rest of
    the spec, and the API server checks it (RBAC: patch trustbudgets; the CRD's rules)."""

    def allocate(budget: str, agent_id: str, amount: Decimal | None) -> None:
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        value = None if amount is None else str(amount)
        patch = {"spec": {"agentAllocations": {agent_id: value}}}
        try:
            client.CustomObjectsApi(api).patch_cluster_custom_object(
                GROUP,
                VERSION,
                RESOURCES["TrustBudget"].plural,
                budget,
                patch,
                _content_type="application/merge-patch+json",
                _request_timeout=10,
            )
        except ApiException as error:
            if error.status == 404:
                raise NotFound(f"no TrustBudget {budget}") from None
            raise ValueError(
                f"TrustBudget {budget} refused the allocation: {_refusal(error)}"
            ) from None

    return allocate


def _refusal(error: Any) -> str:
    """The API server's message of a refused write, bounded."""
    try:
        message = str(json.loads(error.body).get("message", ""))
    except (TypeError, ValueError, AttributeError):
        message = ""
    return shown(message or f"{error.status} {error.reason}")[:500]


def _applying(store: BudgetStore) -> Allocate:
    """Read, change and apply the spec: the embedded ledger is held for writing by this
    command, so nothing edits the spec in between; the model checks it as the CRD would."""

    def allocate(budget: str, agent_id: str, amount: Decimal | None) -> None:
        wire = store.get(BudgetKey("TrustBudget", budget)).to_wire()
        allocations = wire["spec"].setdefault("agentAllocations", {})
        if amount is None:
            allocations.pop(agent_id, None)
        else:
            allocations[agent_id] = str(amount)
        try:
            store.apply(TrustBudget.model_validate(wire))
        except ValidationError as error:
            lines = "; ".join(field_errors(error))
            raise ValueError(f"TrustBudget {budget} refused the allocation: {lines}") from None

    return allocate


def _secret_ref(value: str) -> SecretKeyRef:
    name, _, key = value.partition("/")
    if not name or not key:
        raise ValueError(f"--provider-key-secret {value!r}: write it as NAME/KEY")
    return SecretKeyRef(name=name, key=key)


def _token(agent_id: str, agent: Agent, key: bytes, issuer: str) -> str:
    claims = tokens.AgentClaims(
        agent_id=agent_id,
        budget_id=agent.budget_id,
        issued_at=int(agent.issued_at.timestamp()),
        expires_at=int(agent.expires_at.timestamp()) if agent.expires_at else None,
        issuer=issuer,
        permissions=tuple(agent.permissions),
        token_id=agent.token_id,
    )
    return tokens.issue(claims, key=key)


def _expiry(now: datetime, given: str | None) -> datetime | None:
    return now + parse_duration(given) if given else None


def _allocation(text: str) -> Decimal | None:
    """`--allocation`: dollars, or `default` for the budget's initialBalance."""
    if text == "default":
        return None
    amount = parse_amount(text)
    if amount <= 0:
        raise ValueError(f"--allocation {text}: give dollars above zero, or default")
    return amount


def _also_provider(value: str) -> ProviderKey:
    """`--also-provider anthropic=anthropic/api-key`: a provider id and its key's Secret."""
    provider, equals, secret = value.partition("=")
    if not equals:
        raise ValueError(f"--also-provider {value!r}: write it as PROVIDER=NAME/KEY")
    try:
        return ProviderKey(provider=provider, provider_key=_secret_ref(secret))
    except ValidationError as error:
        lines = "; ".join(field_errors(error))
        raise ValueError(f"--also-provider {value!r}: {lines}") from None


def cmd_create(args: argparse.Namespace, out: TextIO, ledger: Path) -> int:
    ref = _secret_ref(args.provider_key_secret)
    others = [_also_provider(value) for value in args.also_provider]
    allocation = None if args.allocation is None else _allocation(args.allocation)
    now = system_clock().replace(microsecond=0)
    agent_id = tokens.new_agent_id()
    try:
        agent = Agent(
            budget_id=tokens.new_budget_id(),
            token_id=tokens.new_token_id(),
            issued_at=now,
            expires_at=_expiry(now, args.expires_in),
            provider=args.provider,
            provider_model=args.model or "",
            provider_key=ref,
            project=args.project or "",
            other_providers=others,
        )
    except ValidationError as error:
        raise ValueError("; ".join(field_errors(error))) from None

    with where(args, ledger) as here:
        for provider in agent.providers():  # a handshake needs each
            secret = provider.provider_key
            try:
                here.secrets.read(here.namespace, secret.name, secret.key)
            except LookupError as error:
                raise ValueError(f"the key of provider {provider.provider}: {error}") from None
        key = signing_key(here.secrets, here.namespace)
        if allocation is not None:  # first, so that the account opens with it
            here.allocate(args.budget, agent_id, allocation)
        administering.add_agent(here.store, args.budget, agent_id=agent_id, agent=agent, now=now)
    out.write(f"agent: {agent_id}\nbudget_id: {agent.budget_id}\n")
    out.write(f"token: {_token(agent_id, agent, key, args.issuer)}\n")
    return 0


def cmd_set(args: argparse.Namespace, out: TextIO, ledger: Path) -> int:
    """Give the agent its own allocation (or the budget's again), applied at once."""
    allocation = _allocation(args.allocation)
    now = system_clock()

    with where(args, ledger) as here:
        budget = here.store.get(BudgetKey("TrustBudget", args.budget))
        assert isinstance(budget, TrustBudget)
        if args.agent not in budget.status.agents:
            raise ValueError(f"no agent {args.agent} in TrustBudget {args.budget}")
        here.allocate(args.budget, args.agent, allocation)
        total, balance = administering.apply_allocation(
            here.store, args.budget, agent_id=args.agent, now=now
        )
    out.write(f"agent: {args.agent}: {balance:.2f} of {total:.2f} USD left\n")
    return 0


def cmd_rotate(args: argparse.Namespace, out: TextIO, ledger: Path) -> int:
    now = system_clock().replace(microsecond=0)
    token_id = tokens.new_token_id()
    expires_at = _expiry(now, args.expires_in)

    with where(args, ledger) as here:
        key = signing_key(here.secrets, here.namespace)
        closed, agent = administering.rotate_agent(
            here.store,
            args.budget,
            agent_id=args.agent,
            token_id=token_id,
            expires_at=expires_at,
            now=now,
        )
    out.write(f"agent: {args.agent}: {closed} leases closed; the old token is refused\n")
    out.write(f"token: {_token(args.agent, agent, key, args.issuer)}\n")
    return 0


def cmd_revoke(args: argparse.Namespace, out: TextIO, ledger: Path) -> int:
    now = system_clock()

    with where(args, ledger) as here:
        closed = administering.revoke_agent(here.store, args.budget, agent_id=args.agent, now=now)
    out.write(f"agent: {args.agent} revoked: {closed} leases closed, its token is refused\n")
    return 0


def cmd_list(args: argparse.Namespace, out: TextIO, ledger: Path) -> int:
    with where(args, ledger, writes=False) as here:
        budget = here.store.get(BudgetKey("TrustBudget", args.budget))
    assert isinstance(budget, TrustBudget)
    for agent_id, agent in sorted(budget.status.agents.items()):
        account = budget.status.accounts.get(agent_id)
        open_leases = [
            h for h in (account.leases if account else {}).values() if h.state == "active"
        ]
        state = "revoked" if agent.revoked_at else "active"
        money = f"{account.balance:.2f} of {account.allocation:.2f} USD left" if account else ""
        if agent_id in budget.spec.agent_allocations:
            money += f" (own allocation {budget.spec.agent_allocations[agent_id]:.2f})"
        providers = ",".join(p.provider for p in agent.providers())
        out.write(
            f"{agent_id}  {state}  {providers}  {money}  {len(open_leases)} open leases"
            f"  token issued {format_time(agent.issued_at)}\n"
        )
    return 0
