"""Notification channels: rendered per channel, debounced, retried, sent off the reconcile path."""

from budgetops.notify.outbox import NotificationMetrics, Notifier, SecretSource
from budgetops.notify.render import Batch
from budgetops.notify.targets import DeliveryError, TargetError

__all__ = [
    "Batch",
    "DeliveryError",
    "NotificationMetrics",
    "Notifier",
    "SecretSource",
    "TargetError",
]
