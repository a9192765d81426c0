"""Use cases: one service per thing BudgetOps does, between the entry points and the stores."""
