"""Metrics and, later, Events: what BudgetOps tells operators about itself."""
