"""What `serve` and `run` serve with: one frozen settings object, built once from the parsed
flags and the environment, validated once, and the only configuration serving code reads.

The parser imports it only to check a --ttl, so `--version` and `status` never load it.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TypedDict

from budgetops.apis.common import format_duration, parse_duration

from .defaults import DEFAULT_NAMESPACE, VERDICT_KEYS_ENV

MAX_TTL = timedelta(days=7)
"""Longest --ttl: a reservation is meant to be confirmed or refunded within minutes."""
MAX_SHUTDOWN_DELAY = timedelta(seconds=60)
"""Longest --shutdown-delay: it must end well within the pod's termination grace period."""
NAMESPACE_ENV = "POD_NAMESPACE"
SERVICE_ACCOUNT_ENV = "BUDGETOPS_SERVICE_ACCOUNT"


def shutdown_delay(value: str | None) -> timedelta:
    """A --shutdown-delay: none, or a duration up to MAX_SHUTDOWN_DELAY (ValueError if not)."""
    if value is None:
        return timedelta(0)
    parsed = parse_duration(value)
    if parsed > MAX_SHUTDOWN_DELAY:
        raise ValueError(f"{value} is longer than {format_duration(MAX_SHUTDOWN_DELAY)}")
    return parsed


class TTLTooLong(ValueError):
    """A --ttl or --lease-ttl longer than MAX_TTL."""


def ttl_duration(value: str) -> timedelta:
    """A --ttl or --lease-ttl: a duration up to MAX_TTL. The one place a ttl is checked:
    ValueError if it is no duration, TTLTooLong if longer, OverflowError if past what a
    timedelta holds."""
    parsed = parse_duration(value)
    if parsed > MAX_TTL:
        raise TTLTooLong(f"{value} is longer than {format_duration(MAX_TTL)}")
    return parsed


@dataclass(frozen=True)
class ServeSettings:
    """What the webhook and the lease API are served with, by `serve` and `run` alike."""

    listen: str
    """host:port, as `--listen` normalised it."""
    ttl: timedelta
    lease_ttl: timedelta
    issuer: str
    own_service_account: str = ""
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    namespace: str = ""
    """Where the lease API's signing key and provider key Secrets live ("" embedded)."""
    audit_file: str | None = None
    shutdown_delay: timedelta = timedelta(0)
    """How long requests are still answered after SIGTERM, before the server stops taking
    them: until the API server has stopped sending here (`--shutdown-delay`)."""

    def __post_init__(self) -> None:
        if bool(self.tls_cert_file) != bool(self.tls_key_file) and not self.makes_tls:
            raise ValueError("give both --tls-cert-file and --tls-key-file, or neither")

    @property
    def makes_tls(self) -> bool:
        """Whether the serving certificate is still to be made (`run --tls-secret`)."""
        return False

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0] or "127.0.0.1"

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])

    @property
    def tls(self) -> tuple[str, str] | None:
        """The certificate and key files to serve HTTPS with, or None for plain HTTP."""
        if self.tls_cert_file and self.tls_key_file:
            return self.tls_cert_file, self.tls_key_file
        return None


class _Serving(TypedDict):
    listen: str
    ttl: timedelta
    lease_ttl: timedelta
    issuer: str
    own_service_account: str
    tls_cert_file: str | None
    tls_key_file: str | None
    audit_file: str | None
    shutdown_delay: timedelta


def _serving(args: argparse.Namespace, environ: Mapping[str, str]) -> _Serving:
    """The fields `serve` and `run` share, from their flags (ttls checked here, once)."""
    account = args.own_service_account
    return _Serving(
        listen=args.listen,
        ttl=ttl_duration(args.ttl),
        lease_ttl=ttl_duration(args.lease_ttl),
        issuer=args.issuer,
        own_service_account=environ.get(SERVICE_ACCOUNT_ENV, "") if account is None else account,
        tls_cert_file=args.tls_cert_file,
        tls_key_file=args.tls_key_file,
        audit_file=args.audit_file,
        shutdown_delay=shutdown_delay(args.shutdown_delay),
    )


@dataclass(frozen=True)
class EmbeddedSettings(ServeSettings):
    """`budgetops serve`: the webhook on the embedded ledger at `db`."""

    db: Path = field(default_factory=Path)
    secrets_dir: Path = field(default_factory=Path)
    """The agent signing and provider key files (default: <ledger>.secrets)."""
    verdict_keys: str | None = None
    """The verdict keyring's folder: --verdict-keys, else $BUDGETOPS_VERDICT_KEYS, else None
    (the default place, see `budgetops.adapters.keyring.keys_folder`)."""

    @classmethod
    def from_args(
        cls, args: argparse.Namespace, db: Path, environ: Mapping[str, str] | None = None
    ) -> EmbeddedSettings:
        env = os.environ if environ is None else environ
        return cls(
            **_serving(args, env),
            db=db,
            secrets_dir=(
                Path(args.secrets_dir) if args.secrets_dir else db.with_name(f"{db.name}.secrets")
            ),
            verdict_keys=args.verdict_keys or env.get(VERDICT_KEYS_ENV) or None,
        )


@dataclass(frozen=True)
class ClusterSettings(ServeSettings):
    """`budgetops run`: the webhook in a cluster, and its reconciler unless told not to."""

    namespace: str = DEFAULT_NAMESPACE
    kubeconfig: str | None = None
    reconcile: bool = True
    peering: bool = True
    reconcile_poll: timedelta = timedelta(seconds=2)
    tls_secret: str | None = None
    """The Secret of `namespace` whose CA and certificate BudgetOps makes and serves with."""
    tls_service: str = "budgetops"
    tls_extra_names: tuple[str, ...] = ()
    webhook_configuration: str = "budgetops"
    tls_dir: Path = Path("/tmp/budgetops-tls")

    @property
    def makes_tls(self) -> bool:
        return bool(self.tls_secret) and not self.tls_cert_file

    @classmethod
    def from_args(
        cls, args: argparse.Namespace, environ: Mapping[str, str] | None = None
    ) -> ClusterSettings:
        env = os.environ if environ is None else environ
        namespace = args.namespace
        return cls(
            **_serving(args, env),
            namespace=env.get(NAMESPACE_ENV, DEFAULT_NAMESPACE) if namespace is None else namespace,
            kubeconfig=args.kubeconfig,
            reconcile=args.reconcile,
            peering=args.peering,
            reconcile_poll=parse_duration(args.reconcile_poll),
            tls_secret=args.tls_secret,
            tls_service=args.tls_service,
            tls_extra_names=tuple(args.tls_extra_name or ()),
            webhook_configuration=args.webhook_configuration,
            tls_dir=Path(args.tls_dir),
        )
