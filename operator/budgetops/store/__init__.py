"""The budget ledger and the Kubernetes adapters beside it.

The ledger: `base` (the protocol), `commit` (group commit and the read-back guard), `sqlite`
(embedded), `kube` with `informer` (in a cluster) and `audit` (the chain they seal). Beside
it: Secrets, keys, Events, objects, lease objects, verdict maps, webhook TLS, REST helpers.
"""

from budgetops.apis.resources import BudgetKey
from budgetops.store.base import BudgetStore, ChargeTimeout, NotFound, Unreadable
from budgetops.store.sqlite import SQLiteStore

__all__ = ["BudgetKey", "BudgetStore", "ChargeTimeout", "NotFound", "SQLiteStore", "Unreadable"]
