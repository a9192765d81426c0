"""Where a budget's transitions are announced: channels and their debounce window.

Both kinds carry the same block. A channel names a Secret key holding its one URL (a
webhook, Slack or Teams URL, or `smtp://user:password@host:port/?from=...` for email), so a
spec never holds a credential and `kubectl get -o yaml` never shows one. A namespaced
budget reads Secrets in its own namespace; the cluster-scoped TrustBudget reads them in the
operator's namespace.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Literal

from pydantic import Field, field_validator

from budgetops.apis.common import Duration, Model, SecretKeyRef, cel

ChannelType = Literal["webhook", "slack", "teams", "email"]


class Channel(Model):
    """A notification destination; its URL or credentials stay in a Secret."""

    name: str = Field(min_length=1, max_length=63)
    type: ChannelType
    secret_ref: SecretKeyRef
    to: list[str] = Field(
        default_factory=list, max_length=32, description="Recipients (email channels only)"
    )


class Notifications(Model):
    """Where transitions are announced; one message per `aggregationWindow` at most."""

    model_config = cel(
        (
            "self.channels.all(c, self.channels.exists_one(d, d.name == c.name))",
            "channel names must be unique (each has its own debounce)",
        )
    )

    aggregation_window: Duration = timedelta(hours=1)
    channels: list[Channel] = Field(default_factory=list, max_length=16)

    @field_validator("channels")
    @classmethod
    def _unique(cls, channels: list[Channel]) -> list[Channel]:
        names = [c.name for c in channels]
        if len(set(names)) != len(names):
            raise ValueError("channel names must be unique (each has its own debounce)")
        return channels
