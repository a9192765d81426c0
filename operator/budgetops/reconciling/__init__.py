"""Reconciling: the entry point that keeps every budget true over time, between admissions.

One reconcile of one budget is the use case `usecases/reconciling.py` (the pure decisions are
engine/reconcile.py); here is only when and where it runs: `schedule` decides when each budget
is due; `operator` elects, through kopf peering, the replica that runs the scheduler (kopf
handles no budget itself); `embedded` runs the same reconciler over the SQLite ledger,
watching its row versions; `leases` mirrors open leases as BudgetLease objects.
"""
