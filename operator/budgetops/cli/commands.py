"""Every `budgetops` command: its name, help, flags and the "module:function" that runs it.

Building the parser imports no command module: each verb names its handler as a `Target`,
and `main` imports the handler's module only once the verb is chosen, so `budgetops status`
loads the ledger's code but never kopf, kubernetes or aiohttp, and `--version` loads neither,
nor pydantic. Keep this module light: argparse, `apis.numbers` and constants; a flag whose
type needs the models (an amount, a duration, risk points) imports them when it is parsed.
"""

from __future__ import annotations

import argparse
import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import TextIO, TypeAlias, cast

from budgetops import __version__
from budgetops.apis.numbers import NumberError, counts, whole

from .defaults import DEFAULT_NAMESPACE, VERDICT_KEYS_ENV

DEFAULT_DB = Path.home() / ".local" / "state" / "budgetops" / "ledger.sqlite3"
DEFAULT_TTL = "5m"
DEFAULT_ISSUER = "budgetops.dev"
"""`budgetops.crypto.tokens.DEFAULT_ISSUER`, named here so that the parser needs no JWT code
(tests/unit/test_cli_lazy.py keeps the two equal)."""
WRITES = frozenset({"consume", "check", "adjust", "grant", "report-metrics", "approve"})
"""The budget verbs run by `cli/writes.py` (with `apply` and `charge`): they load the signing
code, which the reading verbs of `cli/budgets.py` do not."""
CHANGE_CLASSES = ("standard", "low-risk", "security-fix", "incident")
"""`budgetops.apis.riskbudget.ChangeClass`, named here so that the parser needs no models
(tests/unit/test_grants.py keeps the two equal)."""
EXIT_INVALID = 2
"""A usage, manifest or ledger error: what argparse itself exits with."""

Verbs: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
Run = Callable[[argparse.Namespace, TextIO], int]
OnLedger = Callable[[argparse.Namespace, TextIO, Path], int]


@dataclass(frozen=True)
class Target:
    """What runs a verb: `function` of `module`, imported when the verb is chosen; with
    `ledger`, called as function(args, out, ledger path), else as function(args, out)."""

    module: str
    function: str
    ledger: bool = True

    def __call__(self, args: argparse.Namespace, out: TextIO) -> int:
        found = getattr(importlib.import_module(self.module), self.function)
        if self.ledger:
            code = cast(OnLedger, found)(args, out, db_path(args.db))
        else:
            code = cast(Run, found)(args, out)
        return code


def _in(module: str, function: str, *, ledger: bool = True) -> Target:
    return Target(f"budgetops.cli.{module}", function, ledger)


def db_path(value: str | None) -> Path:
    """The ledger `--db` names, else $BUDGETOPS_DB, else DEFAULT_DB."""
    return Path(value or os.environ.get("BUDGETOPS_DB") or DEFAULT_DB)


def _delay(value: str) -> str:
    """argparse type of --shutdown-delay (kept as given; see `shutdown_delay`)."""
    from .settings import shutdown_delay

    try:
        shutdown_delay(value)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from error
    return value


def _ttl(value: str) -> str:
    """argparse type of --ttl: a duration up to MAX_TTL (kept as given; see `ttl_duration`)."""
    from budgetops.apis.common import format_duration

    from .settings import MAX_TTL, ttl_duration

    try:
        ttl_duration(value)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from error
    except OverflowError as error:  # more days than timedelta holds
        too_long = f"{value} is longer than {format_duration(MAX_TTL)}"
        raise argparse.ArgumentTypeError(too_long) from error
    return value


def _instant(value: str) -> datetime:
    """argparse type of --until: an RFC 3339 instant with its zone (`...Z`), 40 characters
    at most."""
    try:
        parsed = datetime.fromisoformat(value[:40])
    except ValueError:
        parsed = None
    if len(value) > 40 or parsed is None or parsed.tzinfo is None:
        raise argparse.ArgumentTypeError(
            f"{value[:40]!r} is not an instant with its zone, such as 2026-12-31T00:00:00Z"
        )
    return parsed.astimezone(UTC)


def _lasting(value: str) -> timedelta:
    """argparse type of --for: a duration such as 24h or 7d (32 characters at most)."""
    from budgetops.apis.common import parse_duration

    try:
        if len(value) > 32:
            raise ValueError(f"{value[:32]!r}... is not a duration such as 24h or 7d")
        return parse_duration(value)
    except (ValueError, OverflowError) as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _grant_flags(grant: argparse.ArgumentParser) -> None:
    grant.add_argument("--account", help="a TrustBudget's account (a RiskBudget: its service)")
    what = grant.add_mutually_exclusive_group(required=True)
    what.add_argument("--amount", type=_amount, help="USD, points or RP")
    what.add_argument(
        "--change-class",
        choices=CHANGE_CLASSES,
        help="a RiskBudget: let this class through any band instead",
    )
    until = grant.add_mutually_exclusive_group(required=True)
    until.add_argument("--until", type=_instant, help="when it ends: 2026-12-31T00:00:00Z")
    until.add_argument("--for", dest="lasting", type=_lasting, help="how long: 24h, 7d")
    grant.add_argument("--reason", required=True)
    grant.add_argument("--by", help="who gives it, for the audit trail (default: $USER)")


def _listen(value: str) -> str:
    """argparse type of --listen: `host:port` (`[::1]:8443`, `:8443`), `localhost` as
    127.0.0.1, given on as `host:port` with the host unbracketed."""
    host, colon, port = value.rpartition(":")
    try:
        number = whole(port, low=0, high=65535) if colon and port.isdigit() else None
    except NumberError:
        number = None
    if number is None:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not host:port (e.g. 127.0.0.1:8443, [::1]:8443, 0.0.0.0:8443)"
        )
    host = host.removeprefix("[").removesuffix("]")
    return f"{'127.0.0.1' if host.lower() == 'localhost' else host}:{number}"


def _amount(value: str) -> Decimal:
    from budgetops.apis.common import parse_amount

    try:
        return parse_amount(value)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from error


def _points(value: str) -> int:
    """As the risk-points annotation reads them: ASCII digits, 0 to MAX_RISK_POINTS."""
    from budgetops.apis.riskbudget import MAX_RISK_POINTS

    try:
        return whole(value, low=0, high=MAX_RISK_POINTS, of="risk points")
    except NumberError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _signed_points(value: str) -> Decimal:
    """`+24`, `-24` or `24`: the one place a `+` is read, as the sign of a change."""
    from budgetops.apis.riskbudget import MAX_RISK_POINTS

    unsigned = value[1:] if value[:1] == "+" and "0" <= value[1:2] <= "9" else value
    try:
        return Decimal(whole(unsigned, low=-MAX_RISK_POINTS, high=MAX_RISK_POINTS, of="points"))
    except NumberError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _unknowns(value: str) -> dict[str, int]:
    """As the unknowns annotation reads them (`apis.numbers.counts`): the same bounds."""
    try:
        return counts(value)
    except NumberError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _count(value: str) -> int:
    try:
        return whole(value, low=0, high=1_000_000)
    except NumberError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _wait(value: str) -> int:
    try:
        return whole(value, low=0, high=300, of="seconds")
    except NumberError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _release_id(value: str) -> str:
    """An empty id (an unset `$GIT_SHA`) would be a fresh key on every retry: refused."""
    if not value.strip():
        raise argparse.ArgumentTypeError("--release-id must not be empty; omit it for a new id")
    return value.strip()


def add_target_arguments(verb: argparse.ArgumentParser, *, db_help: str) -> None:
    """--db, --kubeconfig, --operator-namespace, --verdict-keys."""
    verb.add_argument("--db", help=db_help)
    verb.add_argument(
        "--kubeconfig", help="work on the cluster instead (kubectl budget: the default)"
    )
    verb.add_argument("--context", help="in a cluster: the kubeconfig context to use")
    verb.add_argument(
        "--operator-namespace",
        default=os.environ.get("POD_NAMESPACE"),
        help="in a cluster: where BudgetOps runs (its keyring and verdict ConfigMaps; "
        "default: $POD_NAMESPACE, else the namespace of the webhook's Service, else "
        f"{DEFAULT_NAMESPACE})",
    )
    add_keys_argument(verb)


def add_keys_argument(verb: argparse.ArgumentParser) -> None:
    """--verdict-keys: where the embedded ledger's signing keyring lives."""
    verb.add_argument(
        "--verdict-keys",
        help=f"embedded: the verdict keyring's folder, kept apart from the ledger (default "
        f"${VERDICT_KEYS_ENV}, else ~/.config/budgetops/verdict-keys)",
    )


def add_run_arguments(verb: argparse.ArgumentParser) -> None:
    """The options only `run` takes."""
    verb.add_argument("--kubeconfig", help="default: the pod's in-cluster credentials")
    verb.add_argument(
        "--no-reconcile",
        dest="reconcile",
        action="store_false",
        help="serve admission only (another deployment reconciles)",
    )
    verb.add_argument(
        "--no-peering",
        dest="peering",
        action="store_false",
        help="reconcile without electing a leader (one replica only)",
    )
    verb.add_argument(
        "--namespace",
        help="where TrustBudget notification Secrets live (default: $POD_NAMESPACE)",
    )
    verb.add_argument(
        "--tls-secret",
        help="serve with the CA and certificate in this Secret of --namespace, made and "
        "renewed by BudgetOps (instead of --tls-cert-file/--tls-key-file)",
    )
    verb.add_argument(
        "--tls-service", default="budgetops", help="with --tls-secret: the webhook's Service"
    )
    verb.add_argument(
        "--tls-extra-name",
        action="append",
        help="with --tls-secret: another DNS name or IP the certificate must serve",
    )
    verb.add_argument(
        "--webhook-configuration",
        default="budgetops",
        help="with --tls-secret: the ValidatingWebhookConfiguration that gets the CA",
    )
    verb.add_argument(
        "--tls-dir",
        default="/tmp/budgetops-tls",
        help="with --tls-secret: where the certificate files are written",
    )
    verb.add_argument(
        "--reconcile-poll",
        default="2s",
        help="how often to look for the objects of pending reservations",
    )
    verb.set_defaults(run=_in("incluster", "cmd_run", ledger=False))


def add_agent_parser(verbs: Verbs, *, db_help: str) -> argparse.ArgumentParser:
    """`budgetops agent create|set|rotate|revoke|list`, run by `cli/agents.py`."""
    agent = verbs.add_parser("agent", help="agents of a USD TrustBudget and their tokens")
    actions = agent.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", help="add an agent and print its identity token")
    create.add_argument("--provider", required=True, help="provider id, e.g. openai")
    create.add_argument(
        "--provider-key-secret",
        required=True,
        help="NAME/KEY of the Secret (a file under the secrets folder) holding the API key",
    )
    create.add_argument("--model", help="the provider model runtimes use by default")
    create.add_argument(
        "--also-provider",
        action="append",
        default=[],
        metavar="PROVIDER=NAME/KEY",
        help="another provider the agent may lease with, and its key's Secret (repeatable); "
        "a handshake names it in `provider`",
    )
    create.add_argument("--project", help="project the agent's spending is totalled under")
    create.add_argument("--allocation", help="USD the agent's own (default: initialBalance)")
    setting = actions.add_parser("set", help="change the agent's allocation, at once")
    setting.add_argument(
        "--allocation", required=True, help="USD, or default for the budget's initialBalance"
    )
    rotate = actions.add_parser("rotate", help="issue a new token; the old one and its leases end")
    revoke = actions.add_parser("revoke", help="refuse the agent's token and close its leases")
    listing = actions.add_parser("list", help="the budget's agents")
    for action in (setting, rotate, revoke):
        action.add_argument("agent", help="agent id (agent_...)")
    for action in (create, rotate):
        action.add_argument("--expires-in", help="token lifetime, e.g. 90d (default: long-lived)")
        action.add_argument(
            "--issuer", default=DEFAULT_ISSUER, help="the issuer the lease API expects"
        )
    for name, action in (
        ("create", create),
        ("set", setting),
        ("rotate", rotate),
        ("revoke", revoke),
    ):
        action.set_defaults(run=_in("agents", f"cmd_{name}"))
    listing.set_defaults(run=_in("agents", "cmd_list"))
    for action in (create, setting, rotate, revoke, listing):
        action.add_argument("--budget", required=True, help="the USD TrustBudget")
        action.add_argument("--db", help=db_help)
        action.add_argument("--kubeconfig", help="work on the cluster's budgets instead")
        action.add_argument(
            "--namespace",
            default=os.environ.get("POD_NAMESPACE", DEFAULT_NAMESPACE),
            help="with --kubeconfig: where the signing key and provider key Secrets live",
        )
        action.add_argument(
            "--secrets-dir", help="where key files live (default: <ledger>.secrets)"
        )
        add_keys_argument(action)
    return agent


def add_attestation_parsers(verbs: Verbs, *, db_help: str) -> None:
    """`verify`, `verdict`, `audit`, `keys`, run by `cli/attestation.py`."""
    verify = verbs.add_parser("verify", help="verify a verdict envelope or an audit trail")
    verify.add_argument("envelope", nargs="?", help="a DSSE envelope (JSON file, or - for stdin)")
    verify.add_argument(
        "--audit",
        action="append",
        help="an audit log to check: a JSON Lines file, -, or db; repeat it for one log per "
        "replica (kubectl logs of each pod), read as one log",
    )
    verify.add_argument("--budget", action="append", help="with --audit: check only this chain")
    verify.add_argument(
        "--partial",
        action="store_true",
        help="with --audit: the log may begin mid-chain (one pod's logs since it started)",
    )
    verify.add_argument("--public-key", action="append", help="PEM public key(s) to verify with")
    verdict = verbs.add_parser("verdict", help="the latest verdict on a workload")
    verdict.add_argument("workload", help="KIND/NAME, e.g. deployment/api")
    verdict.add_argument("-n", "--namespace", default="", help="the workload's namespace")
    verdict.add_argument("-o", "--output", choices=("text", "json"), default="text")
    trail = verbs.add_parser("audit", help="the embedded ledger's audit trail as JSON Lines")
    trail.add_argument(
        "--kind",
        action="append",
        help="only records of this action and its family, e.g. break-glass (uses and "
        "refused attempts), decision, reserve; may repeat",
    )
    keys = verbs.add_parser("keys", help="the verdict signing keyring")
    keys.add_argument("action", choices=("list", "rotate", "export"))
    keys.add_argument("--name", help="rotate: the new key's name (default key-<time>)")
    keys.add_argument("--algorithm", choices=("ed25519", "ecdsa-p256"), default="ed25519")
    for name, verb in (("verify", verify), ("verdict", verdict), ("audit", trail), ("keys", keys)):
        verb.set_defaults(run=_in("attestation", f"cmd_{name}"))
        add_target_arguments(verb, db_help=db_help)


def add_budget_parsers(verbs: Verbs, *, db_help: str) -> None:
    """`status`, `list`, `consume`, `check`, ...: those that only read run in `cli/budgets.py`,
    those in WRITES (which sign, charge or write) in `cli/writes.py`."""

    def verb(
        name: str, text: str, *, budget: bool = True, output: bool = True
    ) -> argparse.ArgumentParser:
        """A budget command; `output`: it prints something `-o json|yaml` can reshape
        (a write prints its receipt lines only)."""
        parser = verbs.add_parser(name, help=text)
        if budget:
            parser.add_argument("budget", nargs="?", help="the budget's name")
            parser.add_argument("--service", help="a RiskBudget by its serviceId")
        parser.add_argument("-n", "--namespace", default="", help="the budget's namespace")
        if output:
            parser.add_argument(
                "-o", "--output", choices=("table", "json", "yaml"), default="table"
            )
        add_target_arguments(parser, db_help=db_help)
        module = "writes" if name in WRITES else "budgets"
        parser.set_defaults(run=_in(module, f"cmd_{name.replace('-', '_')}"))
        return parser

    status = verb("status", "a budget in detail (or every budget), as of now")
    status.add_argument(
        "--account",
        help="only this account of a TrustBudget (e.g. user:alice), read alone: as quick "
        "in a budget of a hundred thousand accounts as in one of ten",
    )
    listing = verb("list", "every budget's state", budget=False)
    listing.add_argument("--status", help="only these states, e.g. Yellow,Red or Exhausted,Low")
    for name, text in (
        ("consume", "charge one release's risk points"),
        ("check", "may this release ship, or this account issue? decided, nothing charged"),
    ):
        release = verb(name, text, output=name == "check")
        release.add_argument("--points", type=_points, help="declared (or --vulnerabilities)")
        release.add_argument(
            "--vulnerabilities",
            metavar="FILE",
            help="a Trivy or CycloneDX JSON report: the points are computed from it with the "
            "budget's spec.vulnerabilityPoints",
        )
        release.add_argument(
            "--baseline",
            metavar="FILE",
            help="with --vulnerabilities: the previous release's report; what it lists too "
            "is carried forward, charged at carriedForwardPercent",
        )
        release.add_argument("--reason", default="", help="what ships, for the entry")
        release.add_argument(
            "--release-id", type=_release_id, help="idempotency key (default: a new one)"
        )
        release.add_argument(
            "--change-class",
            default="standard",
            choices=CHANGE_CLASSES,
        )
        release.add_argument("--dry-run", action="store_true", help="decide, charge nothing")
        release.add_argument(
            "--ttl", default="5m", help="how long a charge stays reserved (at most 7d)"
        )
        release.add_argument(
            "--unknowns",
            type=_unknowns,
            help="what the release could not assess, as budgetops.dev/unknowns: "
            '{"Reachability": 2}',
        )
        release.add_argument(
            "--uncertainty",
            type=_amount,
            help="summed uncertainty of the unknowns, as budgetops.dev/uncertainty: 1.2",
        )
        if name == "check":
            release.add_argument(
                "--account", help="a TrustBudget's account: may it issue? (e.g. user:alice)"
            )
            release.add_argument("--cost", help="with --account: instead of the budget's cost")
    adjust = verb("adjust", "change this window's allocation, with a reason", output=False)
    adjust.add_argument("--by", type=_signed_points, required=True, help="points, + or -")
    adjust.add_argument("--reason", required=True)
    _grant_flags(verb("grant", "extra allocation until a time, with a reason", output=False))
    approve = verb(
        "approve",
        "approve a TrustBudget's break-glass request, in your own name",
        budget=False,
        output=False,
    )
    approve.add_argument("budget", help="the TrustBudget's name")
    approve.add_argument("request", help="the request's id (bg-...), as its denial names it")
    approve.add_argument(
        "--by",
        help="embedded ledger: who approves (default: $USER), taken as given; in a cluster "
        "you approve as the API server knows you",
    )
    approve.add_argument(
        "--wait",
        type=_wait,
        default=10,
        help="in a cluster: seconds to wait for the operator to record it (0: do not wait)",
    )
    metrics = verb(
        "report-metrics",
        "this window's MTTR, change-failure rate and P1 incidents",
        output=False,
    )
    metrics.add_argument("--mttr-hours", type=_amount, required=True)
    metrics.add_argument("--change-failure-rate", type=_amount, required=True, help="percent")
    metrics.add_argument("--p1-incidents", type=_count, default=0)
    history = verb("history", "closed windows and the current one")
    history.add_argument("--window", help="one window: 2026-11, 2026-W48, sprint-2026-11-16")
    verb("receipts", "a budget's recent entries, with verdict digests")
    leases = verb("leases", "every lease of USD budgets", budget=False)
    leases.add_argument("--budget", help="only this TrustBudget's leases")


def parser(prog: str, description: str) -> argparse.ArgumentParser:
    """The command line, one sub-command per verb; each sets `run` to its `Target`."""
    top = argparse.ArgumentParser(prog=prog, description=description)
    top.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    verbs = top.add_subparsers(dest="command", required=True)

    crds = verbs.add_parser("crds", help="print the CRDs generated from the models")
    crds.add_argument("-o", "--output", help="write one file per CRD into this folder")
    crds.set_defaults(run=_in("manifests", "cmd_crds", ledger=False))

    validate = _in("manifests", "cmd_validate", ledger=False)
    for name, run, text in (
        ("validate", validate, "check manifests and print field errors"),
        ("apply", _in("writes", "cmd_apply"), "load manifests into the embedded ledger"),
    ):
        verb = verbs.add_parser(name, help=text)
        verb.add_argument(
            "-f",
            "--filename",
            action="append",
            required=True,
            help="a manifest file or a folder of them (repeatable)",
        )
        verb.set_defaults(run=run)
        if name == "apply":
            verb.add_argument("--db", help=f"ledger file (default $BUDGETOPS_DB or {DEFAULT_DB})")

    charge = verbs.add_parser("charge", help="charge one issuance to a TrustBudget account")
    charge.add_argument("budget", help="TrustBudget name")
    charge.add_argument("--account", required=True, help="account key, e.g. user:alice")
    charge.add_argument("--id", required=True, help="idempotency key (the object's uid)")
    charge.add_argument("--cost", help="override the budget's cost")
    charge.add_argument("--object", help="what is issued, for the audit trail")
    charge.set_defaults(run=_in("writes", "cmd_charge"))

    for verb in (charge,):
        verb.add_argument("--dry-run", action="store_true", help="decide, charge nothing")
        verb.add_argument(
            "--ttl",
            default=DEFAULT_TTL,
            type=_ttl,
            help="how long the charge stays reserved before it must be confirmed (at most 7d)",
        )

    webhook = verbs.add_parser("serve", help="serve the admission webhook on the embedded ledger")
    webhook.set_defaults(run=_in("embedded", "cmd_serve"))
    in_cluster = verbs.add_parser("run", help="serve the admission webhook in a cluster")
    add_run_arguments(in_cluster)
    for verb in (webhook, in_cluster):
        verb.add_argument(
            "--listen", default="127.0.0.1:8443", type=_listen, help="host:port (or localhost:port)"
        )
        verb.add_argument(
            "--tiers",
            help="the tier table (YAML), read at start and again when it changes (default "
            "$BUDGETOPS_TIERS, else the built-in one)",
        )
        verb.add_argument("--tls-cert-file", help="serving certificate (required off loopback)")
        verb.add_argument("--tls-key-file", help="its private key")
        verb.add_argument(
            "--own-service-account",
            help="our own identity, never charged (system:serviceaccount:NS:NAME)",
        )
        verb.add_argument(
            "--ttl",
            default=DEFAULT_TTL,
            type=_ttl,
            help="how long a charge stays reserved before it must be confirmed (at most 7d)",
        )

    db_help = f"ledger file (default $BUDGETOPS_DB or {DEFAULT_DB})"
    add_agent_parser(verbs, db_help=db_help)
    add_attestation_parsers(verbs, db_help=db_help)
    add_budget_parsers(verbs, db_help=db_help)
    add_target_arguments(charge, db_help=db_help)
    for verb in (webhook,):
        verb.add_argument("--db", help=f"ledger file (default $BUDGETOPS_DB or {DEFAULT_DB})")
    webhook.add_argument(
        "--secrets-dir", help="agent signing and provider key files (default: <ledger>.secrets)"
    )
    add_keys_argument(webhook)
    for verb in (webhook, in_cluster):
        verb.add_argument(
            "--audit-file",
            help="also append the audit trail, as JSON Lines, to this file (run: besides "
            "stdout; serve: besides the ledger's audit table)",
        )
        verb.add_argument(
            "--issuer", default=DEFAULT_ISSUER, help="the issuer agent tokens must carry"
        )
        verb.add_argument(
            "--lease-ttl", default="1h", type=_ttl, help="how long a lease lasts (at most 7d)"
        )
        verb.add_argument(
            "--shutdown-delay",
            type=_delay,
            help="after SIGTERM, keep answering this long (at most 60s) before no longer "
            "taking requests: the API server sends to a deleted pod for a moment",
        )
    return top
