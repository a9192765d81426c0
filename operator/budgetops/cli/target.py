"""Where a command works: the embedded ledger, or a cluster through its API server.

`budgetops` works on the embedded ledger unless given `--kubeconfig`; `kubectl budget` (the
same code) works on the cluster of the current kubeconfig unless given `--db`. In a cluster
every write goes through the compare-and-swap store the webhook uses (`cli/stores.py`
builds both).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from budgetops.adapters.keyfolder import KeyFiles, embedded_keys
from budgetops.apis.common import GROUP, VERSION
from budgetops.apis.resources import TrustBudget
from budgetops.engine.leaserecords import object_name, status_of
from budgetops.store import BudgetStore
from budgetops.store.audit import AuditTrail, Checkpoints, StreamSink

from . import stores
from .defaults import DEFAULT_NAMESPACE

if TYPE_CHECKING:  # a writer's keyring comes through `Signer`, from cli/signing.py
    from kubernetes.client import ApiClient

    from budgetops.crypto.dsse import Keyring

EXIT_UNREACHABLE = 4


class Signer(Protocol):
    """The keyring a command's writes sign with, or None (said on stderr) when it cannot be
    had; made if `make` and missing (`cli.signing.writer_keyring`)."""

    def __call__(self, keys: KeyFiles, namespace: str, *, make: bool) -> Keyring | None: ...


class ClusterUnreachable(Exception):
    """The cluster could not be asked, or has no BudgetOps; the message says which."""


@dataclass
class Place:
    """Budgets, the verdict keyring, stored envelopes and leases, wherever they live."""

    store: BudgetStore
    keys: KeyFiles
    namespace: str
    """The operator's namespace (its keyring and verdict ConfigMaps); empty embedded."""
    envelope: Callable[[str, str], dict[str, Any] | None]
    """envelope(budget, digest): a stored envelope, or None."""
    leases: Callable[[], list[dict[str, Any]]]
    """Every lease as a BudgetLease object would show it: metadata, spec and status."""
    verdicts: Callable[[], Sequence[tuple[str, str, str, str]]] = tuple
    """Every kept verdict as (budget, digest, at, object)."""
    audit_lines: Callable[[], tuple[str, ...]] | None = None
    keyring: Keyring | None = None
    """What signs the verdicts of this command's charges: None when it only reads, or when
    no keyring could be had (its verdicts are then recorded by digest only)."""


def probe(api: Any, where: str) -> None:
    """Fail fast, and clearly, when the API server does not answer or has no BudgetOps."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    try:
        client.ApisApi(api).get_api_versions(_request_timeout=5)
        client.CustomObjectsApi(api).list_cluster_custom_object(
            GROUP, VERSION, "trustbudgets", limit=1, _request_timeout=5
        )
    except (HTTPError, OSError) as error:
        raise ClusterUnreachable(f"cannot reach the cluster of {where}: {error}") from None
    except ApiException as error:
        if error.status == 404:
            raise ClusterUnreachable(
                f"the cluster of {where} has no BudgetOps CRDs: install them "
                "(helm install budgetops charts/budgetops, or kubectl apply -f crds/)"
            ) from None
        raise ClusterUnreachable(
            f"the cluster of {where} refused: {error.status} {error.reason}"
        ) from None


def _cluster_leases(api: Any) -> Callable[[], list[dict[str, Any]]]:
    def leases() -> list[dict[str, Any]]:
        from kubernetes import client

        found = client.CustomObjectsApi(api).list_cluster_custom_object(
            GROUP, VERSION, "budgetleases", _request_timeout=10
        )
        assert isinstance(found, dict)
        return list(found.get("items", []))

    return leases


def _ledger_leases(store: BudgetStore) -> Callable[[], list[dict[str, Any]]]:
    """The embedded ledger's leases, shaped like the BudgetLease objects a cluster keeps."""

    def leases() -> list[dict[str, Any]]:
        shown = []
        for budget in store.list("TrustBudget"):
            assert isinstance(budget, TrustBudget)
            for account, held in sorted(budget.status.accounts.items()):
                for lease_id, hold in sorted(held.leases.items()):
                    shown.append(
                        {
                            "metadata": {"name": object_name(lease_id)},
                            "spec": {
                                "budgetRef": {"name": budget.metadata.name, "account": account},
                                "holder": {"id": hold.holder},
                            },
                            "status": status_of(hold),
                        }
                    )
        return shown

    return leases


@contextlib.contextmanager
def place(
    args: argparse.Namespace, ledger: Path, *, signer: Signer | None = None
) -> Iterator[Place]:
    """The embedded ledger at `ledger`, or the cluster when `args.kubeconfig` is set ("" for
    the current kubeconfig's default, as kubectl finds it). With a `signer` the place is
    written to, its writes signed by the keyring the signer finds (`cli.signing.writing`);
    without one it is read only, and no signing code is loaded."""
    if args.kubeconfig is not None:
        from budgetops.adapters.secrets import KubeSecrets
        from budgetops.adapters.verdictmaps import VerdictMaps

        api = cluster_api(args)
        args.operator_namespace = args.operator_namespace or operator_namespace(api)
        _cluster_tiers(api, args.operator_namespace)
        secrets = KubeSecrets(api)
        ring = None if signer is None else signer(secrets, args.operator_namespace, make=False)
        trail = held_trail(None if ring is None else Checkpoints.by(ring))
        maps = VerdictMaps(api, args.operator_namespace)
        with stores.cluster_store(api, trail, approvals=False) as store:
            yield Place(
                store,
                secrets,
                args.operator_namespace,
                lambda budget, digest: maps.read(budget)[1].get(digest),
                _cluster_leases(api),
                verdicts=maps.index,
                keyring=ring,
            )
        return
    keys = embedded_keys(ledger, args.verdict_keys)
    with stores.ledger(ledger, "read" if signer is None else "write") as sqlite:
        ring = None
        if signer is not None:  # made only once the ledger is known to serve
            ring = signer(keys, "", make=True)
            sqlite.trail = AuditTrail(checkpoints=None if ring is None else Checkpoints.by(ring))
        yield Place(
            sqlite,
            keys,
            "",
            lambda _, digest: sqlite.verdict(digest),
            _ledger_leases(sqlite),
            sqlite.verdict_index,
            sqlite.audit_lines,
            ring,
        )


def held_trail(checkpoints: Checkpoints | None) -> AuditTrail:
    """The audit trail of a command in a cluster: its movements are records of the budget's
    chain like the operator's, held in the status until the operator publishes them with
    its own, and echoed on this command's stderr."""
    return AuditTrail(checkpoints=checkpoints, sinks=[StreamSink(sys.stderr)], hold=True)


def api_client(kubeconfig: str | None, *, context: str | None = None) -> ApiClient:
    """From a kubeconfig file (its current context, or `context`), or the pod's service
    account when there is none; pooled for the webhook's and the reconciler's threads,
    credentials refreshed every few seconds."""
    from kubernetes import client, config

    from budgetops.adapters.rest import refresh_credentials_at_most_every

    api: ApiClient
    if kubeconfig:
        api = config.new_client_from_config(  # type: ignore[no-untyped-call]
            kubeconfig, context=context
        )
    else:
        configuration = client.Configuration()
        config.load_incluster_config(  # type: ignore[no-untyped-call]
            client_configuration=configuration
        )
        api = client.ApiClient(configuration)
    api.configuration.connection_pool_maxsize = 64
    refresh_credentials_at_most_every(api.configuration)
    return api


def cluster_api(args: argparse.Namespace) -> Any:
    """The API server `args.kubeconfig` names ("" for the current kubeconfig's default, as
    kubectl finds it, or this pod's service account), with `--context`; probed, so that an
    unreachable cluster is ClusterUnreachable before any watch starts."""
    kubeconfig = args.kubeconfig or default_kubeconfig()
    where = kubeconfig or "this pod's service account"
    try:
        api = api_client(kubeconfig, context=getattr(args, "context", None))
    except Exception as error:  # a missing or unreadable kubeconfig, no in-cluster env
        raise ClusterUnreachable(f"cannot use the kubeconfig {where}: {error}") from None
    probe(api, where)
    return api


def _cluster_tiers(api: Any, namespace: str) -> None:
    """Size windows by the operator's tier table (the chart's ConfigMap), unless told
    otherwise by $BUDGETOPS_TIERS; one that cannot be read is said on stderr, and the table
    in force (the built-in one) stays."""
    if os.environ.get("BUDGETOPS_TIERS"):
        return
    from budgetops.adapters.tierfile import from_cluster
    from budgetops.apis import tiers

    try:
        table = from_cluster(api, namespace)
    except ValueError as error:
        sys.stderr.write(f"warning: {error}; windows this command opens use the built-in tiers\n")
        return
    if table is not None:
        tiers.use(table)


def operator_namespace(api: Any) -> str:
    """Where BudgetOps runs, when not told: the namespace of the Service its webhook
    configuration calls (the chart labels it), else DEFAULT_NAMESPACE (a user
    who may not list webhook configurations, or a webhook called by URL)."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    try:
        found = client.AdmissionregistrationV1Api(api).list_validating_webhook_configuration(
            label_selector="app.kubernetes.io/name=budgetops", _request_timeout=5
        )
    except (ApiException, HTTPError, OSError):
        return DEFAULT_NAMESPACE
    namespaces = {
        hook.client_config.service.namespace
        for configuration in found.items
        for hook in configuration.webhooks or []
        if hook.client_config.service is not None
    }
    return namespaces.pop() if len(namespaces) == 1 else DEFAULT_NAMESPACE


def same_place(args: argparse.Namespace) -> str:
    """The options that name the place this command worked on, for a command it suggests."""
    if getattr(args, "kubeconfig", None) is None:
        return f" --db {args.db}" if getattr(args, "db", None) else ""
    chosen = f" --kubeconfig {args.kubeconfig}" if args.kubeconfig else ""
    if getattr(args, "context", None):
        chosen += f" --context {args.context}"
    return f"{chosen} --operator-namespace {args.operator_namespace}"


def default_kubeconfig() -> str | None:
    """The kubeconfig kubectl would use: $KUBECONFIG's first file, else ~/.kube/config;
    None in a pod without either (its service account is used)."""
    listed = os.environ.get("KUBECONFIG", "")
    first = next((p for p in listed.split(os.pathsep) if p), "")
    if first:
        return first
    home = Path.home() / ".kube" / "config"
    return str(home) if home.exists() else None
