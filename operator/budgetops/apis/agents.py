"""Agents: who may borrow from a USD TrustBudget through the lease API, and with which token.

An agent is one account of the budget (named by its id), one identity token and one provider
key. The record lives in the budget's status beside the account, so that rotating or revoking
the token and closing the agent's leases are one compare-and-swap.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Self

from pydantic import Field, WithJsonSchema, model_validator

from budgetops.apis.common import Amount, Model, PositiveAmount, SecretKeyRef, Timestamp, cel

AGENT_ID_PATTERN = r"^agent_[a-z0-9]{6,32}$"
BUDGET_ID_PATTERN = r"^budget-[a-z0-9]{6,32}$"
PROVIDER_PATTERN = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
PERMISSION_PATTERN = r"^[a-z][a-z0-9_-]{0,31}:[a-z][a-z0-9_-]{0,31}$"


PROVIDERS_MAX = 8
"""Providers one agent may lease with: its first and up to seven more."""


class ProviderKey(Model):
    """A provider an agent may lease with: its id, the model runtimes use by default, and
    the Secret key holding its API key."""

    provider: str = Field(pattern=PROVIDER_PATTERN)
    provider_model: str = Field(default="", max_length=128)
    provider_key: SecretKeyRef


class Agent(Model):
    """One agent: its budget id, its current token, and its providers (the first is the
    handshake's default; a handshake naming another gets that one's key)."""

    budget_id: str = Field(pattern=BUDGET_ID_PATTERN)
    token_id: str = Field(min_length=1, max_length=64, pattern=r"^[a-z0-9]+$")
    issued_at: Timestamp
    expires_at: Timestamp | None = None
    revoked_at: Timestamp | None = None
    provider: str = Field(pattern=PROVIDER_PATTERN)
    provider_model: str = Field(default="", max_length=128)
    provider_key: SecretKeyRef
    project: str = Field(default="", max_length=63)
    permissions: list[Annotated[str, Field(pattern=PERMISSION_PATTERN)]] = Field(
        default_factory=lambda: ["llm:call"], max_length=16
    )
    other_providers: list[ProviderKey] = Field(default_factory=list, max_length=PROVIDERS_MAX - 1)

    @model_validator(mode="after")
    def _distinct_providers(self) -> Self:
        names = [self.provider, *(p.provider for p in self.other_providers)]
        if len(set(names)) != len(names):
            raise ValueError(f"an agent's providers must differ: {', '.join(names)}")
        return self

    def providers(self) -> list[ProviderKey]:
        """Every provider of the agent, the default first."""
        first = ProviderKey(
            provider=self.provider,
            provider_model=self.provider_model,
            provider_key=self.provider_key,
        )
        return [first, *self.other_providers]

    def provider_named(self, name: str | None) -> ProviderKey:
        """The provider a handshake asked for (None: the default); LookupError when the
        agent has no provider of that id."""
        providers = self.providers()
        for provider in providers:
            if name is None or provider.provider == name:
                return provider
        names = ", ".join(p.provider for p in providers)
        raise LookupError(f"has no provider {name!r}; its providers: {names}")


Agents = Annotated[
    dict[Annotated[str, Field(pattern=AGENT_ID_PATTERN)], Agent],
    Field(max_length=1024),
    WithJsonSchema(
        {
            "type": "object",
            "x-kubernetes-preserve-unknown-fields": True,
            "description": (
                "Agents of this budget by id: budget id, current token id, provider and the "
                "Secret key holding the provider's key. Written by `budgetops agent`."
            ),
        }
    ),
]
"""A budget's agents; opaque to the CRD schema, like its accounts."""


TOTALS_KEPT = 64
"""Distinct providers, and projects, a budget totals by name; the rest are added up under
OTHER, so a runtime naming a new provider per report cannot grow a status without bound."""
OTHER = "(other)"


AGENT_ID_MAX = len("agent_") + 32
NAME_MAX = 63
"""Longest provider or project name an informative allocation may name (an agent's project
is at most this long; a provider is a DNS label)."""


class InformativeAllocations(Model):
    """What spending is measured against, by provider, by project and in all (the master):
    shown as progress in status, metrics and `budgetops status`, never a refusal. Only an
    agent's own allocation (or `initialBalance`) refuses."""

    model_config = cel(
        (
            f"(!has(self.providers) || self.providers.all(k, size(k) <= {NAME_MAX}))"
            f" && (!has(self.projects) || self.projects.all(k, size(k) <= {NAME_MAX}))",
            f"provider and project names are at most {NAME_MAX} characters",
        )
    )

    total: PositiveAmount | None = Field(
        default=None, description="All the budget's reported spending (USD), the master budget"
    )
    providers: dict[str, PositiveAmount] = Field(
        default_factory=dict, max_length=TOTALS_KEPT, description="USD by provider id"
    )
    projects: dict[str, PositiveAmount] = Field(
        default_factory=dict, max_length=TOTALS_KEPT, description="USD by the agents' project"
    )

    @model_validator(mode="after")
    def _short_names(self) -> Self:
        for name in [*self.providers, *self.projects]:
            if len(name) > NAME_MAX:
                raise ValueError(f"{name[:NAME_MAX]}...: names are at most {NAME_MAX} characters")
        return self


PercentText = Annotated[str, Field(max_length=32)]
"""A percentage to one decimal: the largest amount over the smallest still fits."""


class PercentUsed(Model):
    """Spending as a percentage of each informative allocation set, to one decimal (above
    100 once spending passes it: nothing stops there)."""

    total: PercentText | None = None
    providers: dict[str, PercentText] = Field(default_factory=dict, max_length=TOTALS_KEPT)
    projects: dict[str, PercentText] = Field(default_factory=dict, max_length=TOTALS_KEPT)


class SpentBy(Model):
    """What the budget's agents reported spending through leases since the budget was
    created: informative totals that never refuse anything."""

    total: Amount = Decimal(0)
    providers: dict[str, Amount] = Field(default_factory=dict, max_length=TOTALS_KEPT + 1)
    projects: dict[str, Amount] = Field(default_factory=dict, max_length=TOTALS_KEPT + 1)
    percent_used: PercentUsed | None = Field(
        default=None, description="Of spec.informativeAllocations, where any is set"
    )
