"""The commands that change a budget or answer with a signed verdict: `apply`, `charge`,
`consume`, `check`, `adjust` and `report-metrics`.

They are apart from the reading commands of `cli/budgets.py` because they load the signing
code (`crypto.dsse`, and with it `cryptography`), the charging service and the manifest
reader, which `status`, `list`, `history`, `receipts` and `leases` never need.
"""

from __future__ import annotations

import argparse
import getpass
import json
import time
import uuid
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, TextIO

import yaml

from budgetops.apis.common import GROUP, VERSION, format_time, parse_amount
from budgetops.apis.names import shown
from budgetops.apis.numbers import show
from budgetops.apis.resources import BudgetApproval, BudgetKey, BudgetLease, RiskBudget
from budgetops.apis.riskbudget import ChangeClass, Reliability
from budgetops.engine.clock import system_clock
from budgetops.engine.decisions import Decision, Receipt, Release
from budgetops.engine.unknowns import UnknownCounts
from budgetops.engine.verdicts import (
    RISK_PREDICATE,
    TRUST_PREDICATE,
    risk_predicate,
    statement,
    trust_predicate,
)
from budgetops.engine.vulnerabilities import (
    REPORT_MAX_BYTES,
    Report,
    VulnerabilityScore,
    parse_report,
    score,
)
from budgetops.store import BudgetStore
from budgetops.usecases import administering
from budgetops.usecases.attest import Attestor
from budgetops.usecases.charging import ChargingService, issuance_subject, release_subject

from . import stores
from .attestation import signed_answer
from .budgets import EXIT_DENIED, _risk_key
from .commands import EXIT_INVALID
from .manifests import describe, load_or_report
from .settings import TTLTooLong, ttl_duration
from .signing import writing
from .target import Place, cluster_api, place


def _release(args: argparse.Namespace, scored: VulnerabilityScore | None) -> Release:
    """The release as the flags declare it, its points `--points` or those `scored` from
    its vulnerabilities; `--unknowns`/`--uncertainty` as a workload's annotations would
    (either alone reports the other as none)."""
    change_class: ChangeClass = args.change_class
    key = args.release_id or f"cli-{uuid.uuid4().hex[:12]}"
    unknowns = None
    if args.unknowns is not None or args.uncertainty is not None:
        unknowns = UnknownCounts(
            by_reason=args.unknowns or {}, cumulative_uncertainty=args.uncertainty or Decimal(0)
        )
    return Release(
        key=key,
        points=args.points if scored is None else scored.points,
        change_class=change_class,
        ref=args.reason or key,
        unknowns=unknowns,
        vulnerabilities=scored,
    )


Reports = tuple[Report, Report | None]


def _reports(args: argparse.Namespace, command: str) -> Reports | None:
    """`--vulnerabilities` and its `--baseline`, read and parsed before any ledger is
    opened (a bad file fails the command and touches nothing); None with `--points`."""
    if args.vulnerabilities is None:
        if args.baseline is not None:
            raise ValueError("--baseline goes with --vulnerabilities")
        if args.points is None:
            raise ValueError(f"{command} takes --points or --vulnerabilities")
        return None
    if args.points is not None:
        raise ValueError("give --points or --vulnerabilities, not both")
    baseline = None if args.baseline is None else _read_report(args.baseline)
    return _read_report(args.vulnerabilities), baseline


def _read_report(path: str) -> Report:
    """One report file, read no further than a report may be long."""
    try:
        with open(path, "rb") as file:
            data = file.read(REPORT_MAX_BYTES + 1)
    except OSError as error:
        raise ValueError(f"{path}: cannot be read: {error.strerror or error}") from None
    return parse_report(data, name=Path(path).name)


def _scored(
    store: BudgetStore, key: BudgetKey, reports: Reports | None
) -> VulnerabilityScore | None:
    """The reports' points under the budget's `vulnerabilityPoints`, as it reads now."""
    if reports is None:
        return None
    budget = store.get(key)
    assert isinstance(budget, RiskBudget)
    return score(*reports, budget.spec.vulnerability_points)


def receipt_block(receipt: Receipt) -> str:
    """An issuance's receipt as the seed lays it out: the account (its budget id), the cost
    and what remains, in the budget's unit; admission keeps the one line (`Receipt.line`)."""
    unit = receipt.unit
    resets = format_time(receipt.resets_at) if receipt.resets_at else "never"
    return (
        "--- Trust Budget Receipt ---\n"
        f"Budget ID: {shown(receipt.account)}\n"
        f"Cost: {show(receipt.cost, unit)} {unit}\n"
        f"Remaining: {show(receipt.remaining, unit)} {unit}\n"
        f"Resets: {resets}\n"
        "----------------------------\n"
    )


def report(decision: Decision, out: TextIO, budget: BudgetKey) -> int:
    """A charge's receipt (a block for an issuance, else its lines), and `denied: BUDGET:
    ...` with EXIT_DENIED when it was refused (naming the budget, as the webhook's denials
    do)."""
    if decision.receipt is not None:
        out.write(receipt_block(decision.receipt))
        if decision.reason == "DryRun":
            out.write("dry run, not charged\n")
    else:
        for line in decision.warnings:
            out.write(f"{line}\n")
    if not decision.allowed:
        out.write(f"denied: {budget}: {decision.message}\n")
        return EXIT_DENIED
    return 0


def cmd_apply(args: argparse.Namespace, out: TextIO, path: Path) -> int:
    """Load manifests into the embedded ledger, keeping balances already there."""
    budgets = load_or_report(args.filename, out)
    if budgets is None:
        return EXIT_INVALID
    records = [describe(b) for b in budgets if isinstance(b, BudgetLease)]
    if records:  # refused as the chart's policy refuses them in a cluster, before any write
        out.write(
            f"invalid: {', '.join(records)}: a BudgetLease is a record BudgetOps writes of a "
            "lease; applied by hand it would lend nothing. A lease is obtained through the "
            "lease API (POST /api/v1/auth/handshake with an agent's token); see "
            "docs/lease-api.md\n"
        )
        return EXIT_INVALID
    approvals = [describe(b) for b in budgets if isinstance(b, BudgetApproval)]
    if approvals:  # nothing would record them: the embedded ledger approves by command
        out.write(
            f"invalid: {', '.join(approvals)}: on the embedded ledger a break-glass request is "
            "approved with `budgetops approve BUDGET ID --by NAME`, not a BudgetApproval\n"
        )
        return EXIT_INVALID
    with stores.ledger(path, "create") as store:
        for budget in budgets:
            stored = store.apply(budget)
            out.write(f"{describe(stored)} applied (generation {stored.metadata.generation})\n")
    return 0


def charging(where: Place, ttl: timedelta) -> ChargingService:
    """The charging service on this command's place: its verdicts signed by the keyring a
    write has to hand (a CLI denial is audited and attested like a webhook denial)."""
    attestor = Attestor(where.keyring)
    return ChargingService(where.store, clock=system_clock, ttl=ttl, attestor=attestor)


def cmd_charge(args: argparse.Namespace, out: TextIO, path: Path) -> int:
    """Charge one issuance to an account of a TrustBudget, confirmed at once."""
    ttl = ttl_duration(args.ttl)  # checked by its flag already
    cost = parse_amount(args.cost) if args.cost else None
    with writing(args, path) as where:
        key, decision = charging(where, ttl).charge_account(
            args.budget,
            account=args.account,
            cost=cost,
            key=args.id,
            ref=args.object or args.id,
            ttl=ttl,
            dry_run=args.dry_run,
        )
    return report(decision, out, key)


def cmd_consume(args: argparse.Namespace, out: TextIO, path: Path) -> int:
    """Charge one release's points, confirmed at once (no object will be watched)."""
    reports = _reports(args, "consume")
    ttl = _ttl(args.ttl)
    with writing(args, path) as where:
        key = _risk_key(args, where.store)
        release = _release(args, _scored(where.store, key, reports))
        decision = charging(where, ttl).consume(
            key, release, namespace=key.namespace, ttl=ttl, dry_run=args.dry_run
        )
    code = report(decision, out, key)
    if decision.allowed:
        out.write(f"release key: {release.key}\n")
    return code


def cmd_check(args: argparse.Namespace, out: TextIO, path: Path) -> int:
    """May this release ship? Decided as admission would, charging and writing nothing."""
    if args.account is not None:
        return _check_issuance(args, out, path)
    if args.cost is not None or (args.points is None and args.vulnerabilities is None):
        raise ValueError(
            "check takes --points or --vulnerabilities for a RiskBudget's release, or "
            "--account (and --cost) for a TrustBudget's issuance"
        )
    reports = _reports(args, "check")
    ttl = _ttl(args.ttl)
    with place(args, path) as where:
        key = _risk_key(args, where.store)
        release = _release(args, _scored(where.store, key, reports))
        checked = charging(where, ttl).check(key, release, ttl=ttl)
        decision = checked.decision
        if args.output == "table":
            out.write(f"may ship: {'yes' if decision.allowed else 'no'}\n")
            return report(decision, out, key)
        subject = release_subject(checked.budget.metadata.namespace or "", release)
        predicate = risk_predicate(
            checked.budget, release=release, decision=decision, subject=subject, now=checked.now
        )
        # A CI gate's answer is a signed verdict `verify` accepts, not a bare statement.
        envelope = signed_answer(where, statement(subject, RISK_PREDICATE, predicate))
    return _answer(envelope, args.output, out, decision)


def _check_issuance(args: argparse.Namespace, out: TextIO, path: Path) -> int:
    """May this account issue? Decided as `charge` would, charging and writing nothing."""
    if not args.budget or args.service or args.points is not None or args.vulnerabilities:
        raise ValueError(
            "check --account takes the TrustBudget's name, and no --service, --points or "
            "--vulnerabilities"
        )
    ttl = _ttl(args.ttl)
    cost = parse_amount(args.cost) if args.cost is not None else None
    key = f"check-{uuid.uuid4().hex[:12]}"
    budget = BudgetKey("TrustBudget", args.budget)
    with place(args, path) as where:
        checked = charging(where, ttl).check_account(
            args.budget, account=args.account, cost=cost, key=key, ttl=ttl
        )
        decision = checked.decision
        if args.output == "table":
            out.write(f"may issue: {'yes' if decision.allowed else 'no'}\n")
            return report(decision, out, budget)
        subject = issuance_subject(account=args.account, key=key, ref=key, cost=cost)
        predicate = trust_predicate(
            checked.budget,
            account=args.account,
            cost=checked.budget.spec.cost if cost is None else cost,
            key=key,
            decision=decision,
            subject=subject,
            now=checked.now,
        )
        envelope = signed_answer(where, statement(subject, TRUST_PREDICATE, predicate))
    return _answer(envelope, args.output, out, decision)


def _answer(envelope: dict[str, Any], output: str, out: TextIO, decision: Decision) -> int:
    """`check -o json|yaml`: the signed verdict, and whether it may go ahead as exit code."""
    if output == "json":
        out.write(json.dumps(envelope, indent=2) + "\n")
    else:
        out.write(yaml.safe_dump(envelope, sort_keys=False))
    return 0 if decision.allowed else EXIT_DENIED


def cmd_adjust(args: argparse.Namespace, out: TextIO, path: Path) -> int:
    """Raise or lower this window's allocation (earned capacity, an admin's decision)."""
    if not args.reason.strip():  # before the ledger is opened
        raise ValueError("--reason must say why the allocation changes")
    with writing(args, path) as where:
        key = _risk_key(args, where.store)
        result = administering.adjust_allocation(
            where.store, key, by=args.by, reason=args.reason, clock=system_clock
        )
    out.write(f"{key}: allocation now {result}; it applies until the window ends\n")
    return 0


def cmd_grant(args: argparse.Namespace, out: TextIO, path: Path) -> int:
    """Extra allocation for an account (a RiskBudget: its service) until a time."""
    if not args.reason.strip():  # before the ledger is opened
        raise ValueError("--reason must say why the grant is given")
    if args.account is not None and (args.service or not args.budget):
        raise ValueError("--account names an account of a TrustBudget: give the budget's name")
    now = system_clock()
    until = args.until or now + args.lasting
    with writing(args, path) as where:
        key = (
            BudgetKey("TrustBudget", args.budget)
            if args.account is not None
            else _risk_key(args, where.store)
        )
        account, allocation, balance = administering.grant(
            where.store,
            key,
            account=args.account,
            amount=args.amount or Decimal(0),
            until=until,
            by=args.by or getpass.getuser(),
            reason=args.reason,
            clock=system_clock,
            change_class=args.change_class or "",
        )
    given = f"{args.change_class} through any band" if args.change_class else args.amount
    out.write(
        f"{key}: {shown(account)} granted {given} until {format_time(until)}; "
        f"allocation now {allocation}, balance {balance}\n"
    )
    return 0


def cmd_approve(args: argparse.Namespace, out: TextIO, path: Path) -> int:
    """Approve a break-glass request: in a cluster, a BudgetApproval in the caller's own
    name, which the operator records; on the embedded ledger, recorded at once as `--by`."""
    if args.kubeconfig is not None:
        return _approve_in_cluster(args, out)
    with writing(args, path) as where:
        answer = administering.approve_break_glass(
            where.store,
            args.budget,
            request=args.request,
            approver=args.by or getpass.getuser(),
            clock=system_clock,
        )
    out.write(f"{answer.message}\n")
    return 0 if answer.recorded else EXIT_DENIED


def _approve_in_cluster(args: argparse.Namespace, out: TextIO) -> int:
    """Create the caller's BudgetApproval and wait (`--wait` seconds at most) for the
    operator's answer on it."""
    from kubernetes.client.exceptions import ApiException

    from budgetops.adapters import approvals

    api = cluster_api(args)
    try:
        user, groups = approvals.whoami(api)
        if args.by not in (None, user):
            raise ValueError(f"--by is for the embedded ledger: here you approve as {user}")
        made = approvals.submit(
            api,
            budget=args.budget,
            request=args.request,
            approver=user,
            groups=_quorum_groups(api, args.budget, groups),
        )
        name = made["metadata"]["name"]
        said = made.get("status") or {}
        waited = time.monotonic() + args.wait
        while "recorded" not in said and time.monotonic() < waited:
            time.sleep(0.5)
            said = approvals.read(api, name).get("status") or {}
    except ApiException as error:
        raise ValueError(f"the API server refused the approval: {_refusal(error)}") from None
    if "recorded" not in said:
        out.write(
            f"BudgetApproval {name} made as {user}; the operator records it "
            f"(kubectl get budgetapproval {name})\n"
        )
        return 0
    out.write(f"{said.get('message', '')} (BudgetApproval {name})\n")
    return 0 if said["recorded"] else EXIT_DENIED


def _quorum_groups(api: Any, budget: str, groups: list[str]) -> list[str]:
    """Of the caller's groups, those the budget's quorum names (which is all an approval
    need carry); none when the budget cannot be read, and the username must then do."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    try:
        found: Any = client.CustomObjectsApi(api).get_cluster_custom_object(
            GROUP, VERSION, "trustbudgets", budget, _request_timeout=10
        )
    except ApiException:
        return []
    try:
        named = found["spec"]["breakGlass"]["quorum"]["approvers"]["groups"]
    except (KeyError, TypeError):
        return []
    return [g for g in groups if g in named]


def _refusal(error: Any) -> str:
    """What the API server said, from its Status body when it sent one."""
    try:
        return str(json.loads(error.body)["message"])
    except (TypeError, ValueError, KeyError):
        return f"{error.status} {error.reason}"


def cmd_report_metrics(args: argparse.Namespace, out: TextIO, path: Path) -> int:
    """Report this window's reliability: it decides the next window's earned capacity."""
    figures = Reliability(
        mttr_hours=args.mttr_hours,
        change_failure_rate_percent=args.change_failure_rate,
        p1_incidents=args.p1_incidents,
    )
    with writing(args, path) as where:
        key = _risk_key(args, where.store)
        window = administering.report_reliability(
            where.store, key, figures=figures, clock=system_clock
        )
    out.write(
        f"{key}: reliability for window {window} recorded; earned capacity is decided when "
        "the window closes\n"
    )
    return 0


def _ttl(value: str) -> timedelta:
    """--ttl of `consume` and `check` (its flag checks nothing: `ttl_duration` does, here)."""
    try:
        return ttl_duration(value)
    except TTLTooLong as error:
        raise ValueError(f"--ttl {error}") from None
