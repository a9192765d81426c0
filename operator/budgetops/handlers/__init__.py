"""The operator: kopf handlers that keep every budget true over time."""
