"""Names the parser and the serving settings both use, in a module that imports nothing, so
that neither imports the other for them and `budgetops --version` stays light."""

from __future__ import annotations

DEFAULT_NAMESPACE = "budgetops-system"
"""Where BudgetOps runs when neither a flag nor $POD_NAMESPACE says: `run` finds its Secrets
there, and a command in a cluster the keyring and verdict ConfigMaps."""
VERDICT_KEYS_ENV = "BUDGETOPS_VERDICT_KEYS"
"""`budgetops.adapters.keyring.VERDICT_KEYS_ENV`, named here so that the parser needs no store
code (tests/unit/test_cli_lazy.py keeps the two equal)."""
