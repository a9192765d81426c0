"""The lease API: runtimes borrow, report and return slices of an agent's budget."""
