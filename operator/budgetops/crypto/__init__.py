"""Pure cryptography for agents: identity tokens and provider keys sealed for one lease."""
