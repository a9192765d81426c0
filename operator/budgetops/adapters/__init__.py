"""Kubernetes and file adapters beside the budget store.

What BudgetOps reads and writes outside the ledger: Secrets (`secrets`, `filesecrets`), the
signing keys (`keyring`, `keyfolder`), Events (`events`), reconciled objects (`objects`),
BudgetLease objects (`leaseobjects`), the verdict ConfigMaps (`verdictmaps`), the webhook's
TLS pair (`webhooktls`) and the plain JSON requests they and the in-cluster store send
(`rest`). They are apart from `budgetops.store` because they hold no budget: the store is the
ledger and its audit chain, these are the other I/O. Both sit at one layer, below the use
cases and the entry points, and may import each other.
"""
