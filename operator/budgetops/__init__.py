"""BudgetOps: cumulative budgets enforced at Kubernetes admission time."""

__version__ = "0.1.0"
