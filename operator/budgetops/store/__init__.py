"""The budget store: where budgets and their statuses are read and written.

`base` (the protocol), `commit` (group commit and the read-back guard), `attempt` (one
snapshot-apply-seal-write-publish attempt), `parsed` (the parse cache), `sqlite` (embedded),
`kube` with `informer` (in a cluster), `audit` (the chain they seal) and `errors` (what is
wrong with a ledger file). The other I/O (Secrets, keys, Events, objects, lease objects,
verdict ConfigMaps, webhook TLS, REST helpers) is in `budgetops.adapters`, beside the store
at the same layer.

The package exports the protocol only: importing it loads no implementation, and whoever
needs one imports `budgetops.store.sqlite` or `budgetops.store.kube` by name, where
import-linter sees it (in the CLI, only `cli/stores.py` does).
"""

from budgetops.apis.resources import BudgetKey
from budgetops.store.base import BudgetStore, ChargeTimeout, NotFound, Unreadable

__all__ = ["BudgetKey", "BudgetStore", "ChargeTimeout", "NotFound", "Unreadable"]
