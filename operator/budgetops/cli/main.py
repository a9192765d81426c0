"""`budgetops`: generate CRDs, validate manifests, and charge the embedded ledger by hand.

The embedded ledger is a SQLite file (`--db`, or `BUDGETOPS_DB`). `apply` loads the same
manifests users `kubectl apply`; `charge` and `consume` are the issuance and release paths
a non-Kubernetes caller (an SSH CA, a CI job) can use directly.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import TextIO

from budgetops import __version__
from budgetops.apis.common import format_duration, parse_amount, parse_duration
from budgetops.apis.numbers import NumberError, whole
from budgetops.apis.resources import Budget, BudgetKey, ManifestError, TrustBudget
from budgetops.crypto.tokens import DEFAULT_ISSUER
from budgetops.engine.clock import system_clock
from budgetops.engine.decisions import Decision, admit_trust
from budgetops.store import ChargeTimeout, NotFound, SQLiteStore
from budgetops.store.sqlite import LedgerError, explain

from .agents import COMMANDS as AGENT_COMMANDS
from .agents import add_parser as add_agent_parser
from .attestation import add_parsers as add_attestation_parsers
from .budgets import add_parsers as add_budget_parsers
from .budgets import confirm_now, report
from .embedded import serve_embedded
from .incluster import add_arguments as add_run_arguments
from .manifests import crd_files, load
from .target import EXIT_UNREACHABLE, ClusterUnreachable, add_keys_argument, place
from .target import add_arguments as add_target_arguments

DEFAULT_DB = Path.home() / ".local" / "state" / "budgetops" / "ledger.sqlite3"
DEFAULT_TTL = "5m"
MAX_TTL = timedelta(days=7)
"""Longest --ttl: a reservation is meant to be confirmed or refunded within minutes."""

EXIT_INVALID = 2


def _db_path(value: str | None) -> Path:
    return Path(value or os.environ.get("BUDGETOPS_DB") or DEFAULT_DB)


def _ttl(value: str) -> str:
    """argparse type of --ttl: a duration up to MAX_TTL (kept as given)."""
    try:
        ttl = parse_duration(value)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from error
    except OverflowError:  # more days than timedelta holds
        ttl = MAX_TTL * 2
    if ttl > MAX_TTL:
        raise argparse.ArgumentTypeError(f"{value} is longer than {format_duration(MAX_TTL)}")
    return value


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
    store = SQLiteStore(_db_path(args.db), check_writes=True)
    for budget in budgets:
        stored = store.apply(budget)
        out.write(f"{_describe(stored)} applied (generation {stored.metadata.generation})\n")
    return 0


def cmd_charge(args: argparse.Namespace, out: TextIO) -> int:
    """Charge one issuance to an account of a TrustBudget."""
    ttl = parse_duration(args.ttl)
    key = BudgetKey("TrustBudget", args.budget)

    def charge(budget: Budget) -> Decision:
        assert isinstance(budget, TrustBudget)
        if not budget.spec.renders(args.account):
            raise ValueError(
                f"--account {args.account!r} is not an account of {key}: its accounts are "
                f"named {budget.spec.account_key}"
            )
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
        confirm_now(budget, decision, key=args.id, now=now)
        return decision

    with place(args, _db_path(args.db), writes=True) as where:
        return report(where.store.update_status(key, charge), out)


def cmd_serve(args: argparse.Namespace, out: TextIO) -> int:
    """Serve the validating webhook on the embedded ledger until interrupted."""
    return serve_embedded(_db_path(args.db), args, out)


def parser(prog: str = "budgetops") -> argparse.ArgumentParser:
    """The command line, one sub-command per verb."""
    top = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n")[0])
    top.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
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

    for verb in (charge,):
        verb.add_argument("--dry-run", action="store_true", help="decide, charge nothing")
        verb.add_argument(
            "--ttl",
            default=DEFAULT_TTL,
            type=_ttl,
            help="how long the charge stays reserved before it must be confirmed (at most 7d)",
        )

    webhook = verbs.add_parser("serve", help="serve the admission webhook on the embedded ledger")
    webhook.set_defaults(run=cmd_serve)
    in_cluster = verbs.add_parser("run", help="serve the admission webhook in a cluster")
    add_run_arguments(in_cluster)
    for verb in (webhook, in_cluster):
        verb.add_argument(
            "--listen", default="127.0.0.1:8443", type=_listen, help="host:port (or localhost:port)"
        )
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
            type=_ttl,
            help="how long a charge stays reserved before it must be confirmed (at most 7d)",
        )

    db_help = f"ledger file (default $BUDGETOPS_DB or {DEFAULT_DB})"
    add_agent_parser(verbs, db_help=db_help).set_defaults(run=cmd_agent)
    for verb in add_attestation_parsers(verbs, db_help=db_help):
        verb.set_defaults(run=cmd_attestation)
    for verb in add_budget_parsers(verbs, db_help=db_help):
        verb.set_defaults(run=cmd_budgets)
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
    return top


def cmd_budgets(args: argparse.Namespace, out: TextIO) -> int:
    """`budgetops status|list|consume|check|adjust|...` on the embedded ledger or a cluster."""
    code: int = args.budgets(args, out, _db_path(args.db))
    return code


def cmd_attestation(args: argparse.Namespace, out: TextIO) -> int:
    """`budgetops verify|verdict|audit|keys` on the embedded ledger or the cluster."""
    code: int = args.attestation(args, out, _db_path(args.db))
    return code


def cmd_agent(args: argparse.Namespace, out: TextIO) -> int:
    """`budgetops agent ...` on the embedded ledger."""
    return AGENT_COMMANDS[args.action](args, out, _db_path(args.db))


def main(
    argv: Sequence[str] | None = None, out: TextIO | None = None, *, plugin: bool = False
) -> int:
    """Entry point of the `budgetops` console script; with `plugin`, of `kubectl budget`,
    which works on the current kubeconfig's cluster unless given `--db`."""
    args = parser("kubectl budget" if plugin else "budgetops").parse_args(argv)
    args.prog = "kubectl budget" if plugin else "budgetops"  # what hints tell people to run
    stream = out or sys.stdout
    if plugin and getattr(args, "kubeconfig", "") is None and not getattr(args, "db", None):
        args.kubeconfig = ""  # the cluster kubectl would use
    ledger = _db_path(args.db) if hasattr(args, "db") else None
    try:
        code: int = args.run(args, stream)
    except ClusterUnreachable as error:
        stream.write(f"error: {error}\n")
        return EXIT_UNREACHABLE
    except BrokenPipeError:  # `budgetops status | head`: the reader has all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except NotFound as error:
        hint = (
            "kubectl apply -f"
            if getattr(args, "kubeconfig", None) is not None
            else ("budgetops apply -f")
        )
        stream.write(f"not found: {error.args[0]} (load it with `{hint}`)\n")
        return EXIT_INVALID
    except LedgerError as error:
        stream.write(f"error: {error}\n")
        return EXIT_INVALID
    except ValueError as error:
        stream.write(f"invalid: {_first_line(error)}\n")
        return EXIT_INVALID
    except OverflowError as error:  # a date or duration past what datetime can hold
        stream.write(f"invalid: a date or duration is out of range ({error})\n")
        return EXIT_INVALID
    except ChargeTimeout as error:
        stream.write(f"error: {error}\n")
        return EXIT_INVALID
    except (sqlite3.Error, OSError) as error:
        if ledger is not None and _about(ledger, error):
            stream.write(f"error: {explain(ledger, error)}\n")
        else:
            stream.write(f"error: {error}\n")
        return EXIT_INVALID
    return code


def _first_line(error: ValueError) -> str:
    """The message, on one line (pydantic's errors span several)."""
    lines = str(error).strip().splitlines() or [type(error).__name__]
    return lines[0] if len(lines) == 1 else f"{lines[0]} ({' '.join(lines[1].split())})"


def _about(ledger: Path, error: sqlite3.Error | OSError) -> bool:
    """Whether `error` concerns the ledger file (or its folder, its -wal or -shm file)."""
    if isinstance(error, sqlite3.Error):
        return True
    if error.filename is None:
        return False
    named = Path(os.fsdecode(error.filename))
    return named in ledger.parents or str(named).startswith(str(ledger))


def plugin() -> int:
    """Entry point of the `kubectl-budget` console script (`kubectl budget ...`)."""
    return main(plugin=True)


if __name__ == "__main__":
    sys.exit(main())
