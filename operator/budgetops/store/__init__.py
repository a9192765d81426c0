"""The budget store: where budgets and their statuses are read and written.

`base` (the protocol), `commit` (group commit and the read-back guard), `attempt` (one
snapshot-apply-seal-write-publish attempt), `parsed` (the parse cache), `sqlite` (embedded),
`kube` with `informer` (in a cluster) and `audit` (the chain they seal). The other I/O
(Secrets, keys, Events, objects, lease objects, verdict ConfigMaps, webhook TLS, REST helpers)
is in `budgetops.adapters`, beside the store at the same layer.
"""

from budgetops.apis.resources import BudgetKey
from budgetops.store.base import BudgetStore, ChargeTimeout, NotFound, Unreadable
from budgetops.store.sqlite import SQLiteStore

__all__ = ["BudgetKey", "BudgetStore", "ChargeTimeout", "NotFound", "SQLiteStore", "Unreadable"]
