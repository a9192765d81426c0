"""The runtime SDK: spend an agent's LLM budget through leases (docs/lease-api.md)."""

from budgetops.client.config import ClientConfig, ClientOptions, Clock
from budgetops.client.errors import (
    BudgetError,
    BudgetExceeded,
    BudgetExhausted,
    CallOverLimit,
    InvalidToken,
    ProtocolError,
)
from budgetops.client.notices import UsageWarning
from budgetops.client.runtime import BudgetClient
from budgetops.client.spending import Usage
from budgetops.client.sync import SyncBudgetClient

__all__ = [
    "BudgetClient",
    "BudgetError",
    "BudgetExceeded",
    "BudgetExhausted",
    "CallOverLimit",
    "ClientConfig",
    "ClientOptions",
    "Clock",
    "InvalidToken",
    "ProtocolError",
    "SyncBudgetClient",
    "Usage",
    "UsageWarning",
]
