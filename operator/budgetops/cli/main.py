"""`budgetops`: generate CRDs, validate manifests, and charge the embedded ledger by hand.

The embedded ledger is a SQLite file (`--db`, or `BUDGETOPS_DB`). `apply` loads the same
manifests users `kubectl apply`; `charge` and `consume` are the issuance and release paths
a non-Kubernetes caller (an SSH CA, a CI job) can use directly.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import TextIO

from budgetops.apis.common import format_time, parse_amount, parse_duration
from budgetops.apis.resources import Budget, ManifestError, RiskBudget, TrustBudget
from budgetops.apis.riskbudget import ChangeClass
from budgetops.engine.clock import system_clock
from budgetops.engine.decisions import Decision, Release, admit_risk, admit_trust, show
from budgetops.engine.ledger import confirm
from budgetops.engine.rollover import bring_current_trust, roll_risk_window, summarize_risk
from budgetops.store import BudgetKey, NotFound, SQLiteStore

from .embedded import serve_embedded
from .incluster import add_arguments as add_run_arguments
from .manifests import crd_files, load

DEFAULT_DB = Path.home() / ".local" / "state" / "budgetops" / "ledger.sqlite3"
DEFAULT_TTL = "5m"

EXIT_DENIED = 1
EXIT_INVALID = 2


def _db_path(value: str | None) -> Path:
    return Path(value or os.environ.get("BUDGETOPS_DB") or DEFAULT_DB)


def cmd_crds(args: argparse.Namespace, out: TextIO) -> int:
    """Print the CRDs (or write them into a folder, as committed in crds/)."""
    files = crd_files()
    if args.output:
        folder = Path(args.output)
        folder.mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            (folder / name).write_text(text, encoding="utf-8")
        out.write(f"wrote {len(files)} CRDs to {folder}\n")
    else:
        out.write("---\n".join(files.values()))
    return 0


def _load_or_report(paths: list[str], out: TextIO) -> list[Budget] | None:
    try:
        return load([Path(p) for p in paths])
    except ManifestError as error:
        for line in error.errors or [str(error)]:
            out.write(f"invalid: {line}\n")
        return None


def _describe(budget: Budget) -> str:
    return str(BudgetKey.of(budget))


def cmd_validate(args: argparse.Namespace, out: TextIO) -> int:
    """Check manifests against the models; print each field error with its path."""
    budgets = _load_or_report(args.filename, out)
    if budgets is None:
        return EXIT_INVALID
    for budget in budgets:
        out.write(f"valid: {_describe(budget)}\n")
    return 0


def cmd_apply(args: argparse.Namespace, out: TextIO) -> int:
    """Load manifests into the embedded ledger, keeping balances already there."""
    budgets = _load_or_report(args.filename, out)
    if budgets is None:
        return EXIT_INVALID
    store = SQLiteStore(_db_path(args.db))
    for budget in budgets:
        stored = store.apply(budget)
        out.write(f"{_describe(stored)} applied (generation {stored.metadata.generation})\n")
    return 0


def _report(decision: Decision, out: TextIO) -> int:
    for line in decision.warnings:
        out.write(f"{line}\n")
    if not decision.allowed:
        out.write(f"denied: {decision.message}\n")
        return EXIT_DENIED
    return 0


def _confirm_now(
    budget: TrustBudget | RiskBudget, decision: Decision, *, key: str, now: datetime
) -> None:
    """A caller of the CLI issues right after charging and no watch will see the object, so
    the reservation is confirmed in the same transaction instead of waiting to expire."""
    if decision.cost > 0:
        confirm(budget.status, key=key, now=now)
        if isinstance(budget, RiskBudget):
            summarize_risk(budget.status, budget.spec)


def cmd_charge(args: argparse.Namespace, out: TextIO) -> int:
    """Charge one issuance to an account of a TrustBudget."""
    store = SQLiteStore(_db_path(args.db))
    key = BudgetKey("TrustBudget", args.budget)
    ttl = parse_duration(args.ttl)

    def charge(budget: Budget) -> Decision:
        assert isinstance(budget, TrustBudget)
        cost = parse_amount(args.cost) if args.cost else budget.spec.cost
        now = system_clock()
        decision = admit_trust(
            budget.status,
            budget.spec,
            account=args.account,
            cost=cost,
            key=args.id,
            ref=args.object or args.id,
            now=now,
            ttl=ttl,
            dry_run=args.dry_run,
        )
        _confirm_now(budget, decision, key=args.id, now=now)
        return decision

    return _report(store.update_status(key, charge), out)


def cmd_consume(args: argparse.Namespace, out: TextIO) -> int:
    """Charge one release's risk points to a RiskBudget."""
    store = SQLiteStore(_db_path(args.db))
    key = BudgetKey("RiskBudget", args.budget, args.namespace)
    change_class: ChangeClass = args.change_class
    release = Release(
        key=args.release_id,
        points=args.points,
        change_class=change_class,
        ref=args.release_id,
    )
    ttl = parse_duration(args.ttl)

    def consume(budget: Budget) -> Decision:
        assert isinstance(budget, RiskBudget)
        now = system_clock()
        decision = admit_risk(
            budget.status, budget.spec, release=release, now=now, ttl=ttl, dry_run=args.dry_run
        )
        _confirm_now(budget, decision, key=release.key, now=now)
        return decision

    return _report(store.update_status(key, consume), out)


def _status_lines(budget: Budget) -> list[str]:
    if isinstance(budget, TrustBudget):
        unit = budget.spec.unit
        lines = [f"{_describe(budget)} ({budget.spec.account_key}, {unit})"]
        for name, account in sorted(budget.status.accounts.items()):
            resets = format_time(account.resets_at) if account.resets_at else "never"
            lines.append(
                f"  {name}: balance {show(account.balance, unit)} of "
                f"{show(account.allocation, unit)}, spent {show(account.spent, unit)}, "
                f"reserved {show(account.reserved, unit)}, "
                f"leased {show(account.leased_out, unit)}, resets {resets}"
            )
        return lines
    if isinstance(budget, RiskBudget):
        status = budget.status
        window = status.window.key if status.window else "not started"
        return [
            f"{_describe(budget)} ({budget.spec.service_id}, window {window}): "
            f"{status.consumed} / {status.allocation} RP ({status.percent_used}%), {status.band}"
        ]
    status_ = budget.status
    return [f"{_describe(budget)}: {status_.phase}, {status_.remaining} of {status_.granted} left"]


def cmd_status(args: argparse.Namespace, out: TextIO) -> int:
    """Balances, bands and leases in the embedded ledger."""
    store = SQLiteStore(_db_path(args.db))
    now = system_clock()
    for budget in store.list():
        # Shown as of now, as the next charge would see it; nothing is written back.
        if isinstance(budget, RiskBudget):
            roll_risk_window(budget.status, budget.spec, now=now)
        elif isinstance(budget, TrustBudget):
            bring_current_trust(budget.status, budget.spec, now=now)
        for line in _status_lines(budget):
            out.write(f"{line}\n")
    return 0


def cmd_serve(args: argparse.Namespace, out: TextIO) -> int:
    """Serve the validating webhook on the embedded ledger until interrupted."""
    path = _db_path(args.db)
    out.write(f"ledger: {path}\n")
    return serve_embedded(str(path), args, out)


def parser() -> argparse.ArgumentParser:
    """The command line, one sub-command per verb."""
    top = argparse.ArgumentParser(prog="budgetops", description=__doc__.split("\n")[0])
    verbs = top.add_subparsers(dest="command", required=True)

    crds = verbs.add_parser("crds", help="print the CRDs generated from the models")
    crds.add_argument("-o", "--output", help="write one file per CRD into this folder")
    crds.set_defaults(run=cmd_crds)

    for name, run, text in (
        ("validate", cmd_validate, "check manifests and print field errors"),
        ("apply", cmd_apply, "load manifests into the embedded ledger"),
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
    charge.set_defaults(run=cmd_charge)

    consume = verbs.add_parser("consume", help="charge one release to a RiskBudget")
    consume.add_argument("budget", help="RiskBudget name")
    consume.add_argument("-n", "--namespace", default="default")
    consume.add_argument("--points", type=int, required=True)
    consume.add_argument("--release-id", required=True)
    consume.add_argument(
        "--change-class",
        default="standard",
        choices=["standard", "low-risk", "security-fix", "incident"],
    )
    consume.set_defaults(run=cmd_consume)

    for verb in (charge, consume):
        verb.add_argument("--dry-run", action="store_true", help="decide, charge nothing")
        verb.add_argument(
            "--ttl",
            default=DEFAULT_TTL,
            help="how long the charge stays reserved before it must be confirmed",
        )

    status = verbs.add_parser("status", help="balances and bands in the embedded ledger")
    status.set_defaults(run=cmd_status)

    webhook = verbs.add_parser("serve", help="serve the admission webhook on the embedded ledger")
    webhook.set_defaults(run=cmd_serve)
    in_cluster = verbs.add_parser("run", help="serve the admission webhook in a cluster")
    add_run_arguments(in_cluster)
    for verb in (webhook, in_cluster):
        verb.add_argument("--listen", default="127.0.0.1:8443", help="host:port")
        verb.add_argument("--tls-cert-file", help="serving certificate (required off loopback)")
        verb.add_argument("--tls-key-file", help="its private key")
        verb.add_argument(
            "--own-service-account",
            default=os.environ.get("BUDGETOPS_SERVICE_ACCOUNT", ""),
            help="our own identity, never charged (system:serviceaccount:NS:NAME)",
        )
        verb.add_argument(
            "--ttl",
            default=DEFAULT_TTL,
            help="how long a charge stays reserved before it must be confirmed",
        )

    for verb in (charge, consume, status, webhook):
        verb.add_argument("--db", help=f"ledger file (default $BUDGETOPS_DB or {DEFAULT_DB})")
    return top


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """Entry point of the `budgetops` console script."""
    args = parser().parse_args(argv)
    stream = out or sys.stdout
    try:
        code: int = args.run(args, stream)
    except NotFound as error:
        stream.write(f"not found: {error.args[0]} (load it with `budgetops apply -f`)\n")
        return EXIT_INVALID
    except ValueError as error:
        stream.write(f"invalid: {error}\n")
        return EXIT_INVALID
    return code


if __name__ == "__main__":
    sys.exit(main())
