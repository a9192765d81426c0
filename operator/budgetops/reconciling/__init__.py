"""Reconciling: what keeps every budget true over time, between admissions.

`reconciler` runs one reconcile of one budget (the pure decisions are engine/reconcile.py);
`schedule` decides when each budget is due; `operator` elects, through kopf peering, the
replica that runs the scheduler (kopf handles no budget itself); `embedded` runs the same
reconciler over the SQLite ledger, watching its row versions; `leases` mirrors open leases
as BudgetLease objects.
"""
