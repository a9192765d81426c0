"""Reading and changing budgets by hand: apply, charge, status, list, consume, check, adjust,
history, report-metrics, receipts and leases, on the embedded ledger or in a cluster.

Tables by default, `-o json|yaml` for scripts, colour only on a terminal. `charge`, `consume`
and `check` go through `usecases.charging.ChargingService`, the charge the webhook makes (a
denial is audited and attested like the webhook's); `adjust` and `report-metrics` through
`usecases.administering`. Exit codes:
0 done, 1 denied (consume, check), 2 bad input or no such budget, 4 the cluster cannot be
reached or has no BudgetOps.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, TextIO

from budgetops.apis import tiers
from budgetops.apis.common import format_amount, format_time
from budgetops.apis.names import shown
from budgetops.apis.numbers import show
from budgetops.apis.resources import Budget, BudgetApproval, BudgetKey, RiskBudget, TrustBudget
from budgetops.apis.riskbudget import Band, UnknownsTally
from budgetops.engine import spending
from budgetops.engine.clock import system_clock
from budgetops.engine.rollover import bring_current_trust, roll_risk_window
from budgetops.store import BudgetStore, NotFound

from .target import place

EXIT_DENIED = 1
BAR_WIDTH = 20
COLOURS: dict[str, str] = {
    "Green": "32",
    "Yellow": "33",
    "Red": "31",
    "Exhausted": "1;31",
}


def bar(used: Decimal, allocation: Decimal) -> str:
    """`████████░░░░░░░░░░░░`: the share of the allocation used, in BAR_WIDTH cells."""
    filled = 0 if allocation <= 0 else min(BAR_WIDTH, int(used * BAR_WIDTH / allocation))
    return "█" * filled + "░" * (BAR_WIDTH - filled)


def coloured(band: str, out: TextIO) -> str:
    """A band's name, coloured only when `out` is a terminal."""
    if not out.isatty() or band not in COLOURS:
        return band
    return f"\033[{COLOURS[band]}m{band}\033[0m"


def emit(rows: list[dict[str, Any]], columns: Sequence[str], output: str, out: TextIO) -> None:
    """Rows as a table (the given columns), or whole as JSON or YAML."""
    if output == "json":
        out.write(json.dumps(rows, indent=2, default=str) + "\n")
        return
    if output == "yaml":
        import yaml  # only here: a table or JSON, what most calls ask for, needs none

        out.write(yaml.safe_dump(json.loads(json.dumps(rows, default=str)), sort_keys=False))
        return
    cells = [[str(row.get(c, "")) for c in columns] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    out.write("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    out.write("\n")
    for row in cells:
        out.write("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() + "\n")


def _current(budget: Budget, now: datetime) -> None:
    """Bring a budget to `now` as the next charge would see it (nothing is written)."""
    if isinstance(budget, RiskBudget):
        roll_risk_window(budget.status, budget.spec, now=now)
    elif isinstance(budget, TrustBudget):
        bring_current_trust(budget.status, budget.spec, now=now)


def risk_row(budget: RiskBudget) -> dict[str, Any]:
    status = budget.status
    allocation = Decimal(status.allocation or budget.spec.base_allocation())
    return {
        "kind": "RiskBudget",
        "namespace": budget.metadata.namespace or "",
        "name": budget.metadata.name,
        "service": budget.spec.service_id,
        "window": status.window.key if status.window else "",
        "consumed": status.consumed,
        "allocated": int(allocation),
        "remaining": int(allocation) - status.consumed,
        "percentUsed": status.percent_used,
        "status": status.band,
        "resetsAt": format_time(status.window.end) if status.window else "",
        "unknowns": status.unknowns.model_dump(mode="json", by_alias=True),
        "grants": _grant_rows(budget),
    }


def trust_rows(budget: TrustBudget, named: str | None = None) -> list[dict[str, Any]]:
    """A row per account (`named` alone, if given: asked about before its first charge, it
    shows the full balance it would open with)."""
    unit = budget.spec.unit
    if not budget.status.accounts:
        opening = budget.spec.allocation_for(named or "")
        return [
            {
                "kind": "TrustBudget",
                "namespace": "",
                "name": budget.metadata.name,
                "account": "(none charged yet)" if named is None else named,
                "balance": show(opening, unit),
                "allocated": show(opening, unit),
                "unit": unit,
                "percentUsed": "0",
                "status": "OK",
                "resetsAt": "",
            }
        ]
    rows = []
    for name, account in sorted(budget.status.accounts.items()):
        used = account.allocation - account.balance
        low = account.balance * 100 < budget.spec.alerts.low_balance_percent * account.allocation
        rows.append(
            {
                "kind": "TrustBudget",
                "namespace": "",
                "name": budget.metadata.name,
                "account": name,
                "balance": show(account.balance, unit),
                "allocated": show(account.allocation, unit),
                "unit": unit,
                "percentUsed": str((used * 100 / account.allocation).quantize(Decimal("0.1")))
                if account.allocation
                else "0",
                "status": "Exhausted" if account.balance <= 0 else "Low" if low else "OK",
                "resetsAt": format_time(account.resets_at) if account.resets_at else "never",
                "grants": _grant_rows(budget, name),
            }
        )
    return rows


def find_risk(store: BudgetStore, service: str, namespace: str) -> RiskBudget:
    """The one RiskBudget of `service` (in `namespace`, when given)."""
    found = [
        b
        for b in store.list("RiskBudget")
        if isinstance(b, RiskBudget)
        and b.spec.service_id == service
        and (not namespace or b.metadata.namespace == namespace)
    ]
    if not found:
        where = f" in namespace {namespace}" if namespace else ""
        raise NotFound(f"no RiskBudget for service {service}{where}")
    if len(found) > 1:
        names = ", ".join(str(BudgetKey.of(b)) for b in found)
        raise ValueError(f"service {service} has several RiskBudgets ({names}); give -n")
    return found[0]


def _risk_key(args: argparse.Namespace, store: BudgetStore) -> BudgetKey:
    if args.service:
        return BudgetKey.of(find_risk(store, args.service, args.namespace))
    if not args.budget:
        raise ValueError("name the RiskBudget, or give --service")
    return BudgetKey("RiskBudget", args.budget, args.namespace or "default")


def _detail(budget: RiskBudget, out: TextIO) -> None:
    """The seed's view of one service's budget."""
    row = risk_row(budget)
    spec = budget.spec
    out.write(f"Service: {row['service']}\nWindow: {row['window']}\n")
    table = tiers.active()
    if spec.allocation is None and table.refusal(spec.tier, None):
        out.write(f"Tier: {spec.tier} ({table.refusal(spec.tier, None)})\n")
    elif spec.allocation is None:  # sized by its tier, or by the table's default one
        number, tier = table.row(spec.tier)
        default = ", the default" if spec.tier is None else ""
        out.write(f"Tier: {tier.name} ({number}{default})\n")
    out.write(
        f"Status: {coloured(row['status'], out)}\n"
        f"Budget: {row['consumed']} / {row['allocated']} RP ({row['percentUsed']}%)\n"
        f"{bar(Decimal(row['consumed']), Decimal(row['allocated']))}\n"
        f"Remaining: {row['remaining']} RP\nResets: {row['resetsAt']}\n"
    )
    tally = budget.status.unknowns
    if budget.spec.unknowns is not None or tally != UnknownsTally():
        reasons = ", ".join(f"{shown(r)} {n}" for r, n in sorted(tally.by_reason.items()))
        out.write(
            f"Unknowns: {tally.total} in {tally.releases} releases"
            f"{f' ({reasons})' if reasons else ''}, uncertainty "
            f"{format_amount(tally.cumulative_uncertainty)}; "
            f"{tally.warned} let through past a limit, {tally.blocked} blocked\n"
        )


def summary(budget: Budget) -> list[str]:
    """A budget in a line (a TrustBudget: a line per account), as `status` lists them."""
    key = BudgetKey.of(budget)
    if isinstance(budget, TrustBudget):
        unit = budget.spec.unit
        lines = [f"{key} ({shown(budget.spec.account_key)}, {unit})"]
        for name, account in sorted(budget.status.accounts.items()):
            resets = format_time(account.resets_at) if account.resets_at else "never"
            lines.append(
                f"  {shown(name)}: balance {show(account.balance, unit)} of "
                f"{show(account.allocation, unit)}, spent {show(account.spent, unit)}, "
                f"reserved {show(account.reserved, unit)}, "
                f"leased {show(account.leased_out, unit)}, resets {resets}"
            )
        return lines + informative(budget)
    if isinstance(budget, RiskBudget):
        status = budget.status
        window = status.window.key if status.window else "not started"
        return [
            f"{key} ({shown(budget.spec.service_id)}, window {window}): "
            f"{status.consumed} / {status.allocation} RP ({status.percent_used}%), {status.band}"
        ]
    if isinstance(budget, BudgetApproval):
        asked, said = budget.spec, budget.status
        state = "not recorded yet" if said.recorded is None else shown(said.message)
        by = shown(asked.approver)
        return [f"{key}: {asked.request} of TrustBudget {asked.budget} by {by}, {state}"]
    lease = budget.status
    return [f"{key}: {lease.phase}, {lease.remaining} of {lease.granted} left"]


def break_glass(budget: TrustBudget) -> list[str]:
    """A line per break-glass request the budget holds: who asked, for what, its approvals
    and until when, and how to approve it."""
    quorum = budget.spec.break_glass.quorum if budget.spec.break_glass else None
    required = quorum.required if quorum is not None else 0
    lines = []
    for r in budget.status.break_glass_requests:
        approvals = ", ".join(shown(a.approver) for a in r.approvals) or "none yet"
        state = (
            f"used at {format_time(r.used_at)}"
            if r.used_at is not None
            else f"open until {format_time(r.deadline)}, approve: kubectl budget approve "
            f"{budget.metadata.name} {r.id}"
        )
        lines.append(
            f"Break-glass request {r.id}: {shown(r.account)} by {shown(r.user)} "
            f"({shown(r.reason)}), {len(r.approvals)} of {required} approvals ({approvals}), "
            f"{state}"
        )
    return lines


def granted(budget: RiskBudget | TrustBudget) -> list[str]:
    """A line per grant that lasts: who gave how much to whom, until when, and why."""
    unit = "RP" if isinstance(budget, RiskBudget) else budget.spec.unit
    return [
        f"Grant: {shown(g.account)} "
        + (
            f"{g.change_class} through any band"
            if g.change_class
            else f"+{show(g.amount, unit)} {unit}"
        )
        + f" until {format_time(g.expires_at)} by {shown(g.by)}: {shown(g.reason)}"
        for g in budget.status.grants
    ]


def _grant_rows(
    budget: RiskBudget | TrustBudget, account: str | None = None
) -> list[dict[str, str]]:
    """The grants (of `account` alone, if given) as `-o json|yaml` shows them."""
    return [
        {
            "account": g.account,
            "amount": str(g.amount),
            "by": g.by,
            "reason": g.reason,
            "expiresAt": format_time(g.expires_at),
            "changeClass": g.change_class,
        }
        for g in budget.status.grants
        if account is None or g.account == account
    ]


def informative(budget: TrustBudget) -> list[str]:
    """Reported spending against the spec's informative allocations (none: no lines)."""
    return [
        f"  {item.scope} {shown(item.name)}".rstrip()
        + f": spent {show(item.spent, 'USD')} of {show(item.allocation, 'USD')} USD "
        f"({item.percent}%, informative: never refused)"
        for item in spending.progress(budget.status.spent_by, budget.spec.informative_allocations)
    ]


def _trust_table(rows: list[dict[str, Any]], out: TextIO) -> None:
    """`status BUDGET` of a TrustBudget: a line and a bar per account."""
    for row in rows:
        used = Decimal(row["allocated"]) - Decimal(row["balance"])
        resets = f"resets {row['resetsAt']}" if row["resetsAt"] else "no window yet"
        out.write(
            f"{shown(row['account'])}: {row['balance']} of {row['allocated']} "
            f"{row['unit']} left, {coloured(row['status'], out)}, {resets}\n"
            f"  {bar(used, Decimal(row['allocated']))}\n"
        )


def cmd_status(args: argparse.Namespace, out: TextIO, path: Path) -> int:
    """One budget in detail (`BUDGET` or `--service`), or every budget, as of now."""
    now = system_clock()
    if args.account is not None and (args.service or args.namespace or not args.budget):
        raise ValueError("--account names an account of a TrustBudget: give the budget's name")
    with place(args, path) as where:
        if args.service or args.budget:
            key = (
                _risk_key(args, where.store)
                if args.service or args.namespace
                else BudgetKey("TrustBudget", args.budget)
            )
            budget = where.store.get(key, account=args.account)
            _current(budget, now)
            if isinstance(budget, RiskBudget):
                if args.output != "table":
                    emit([risk_row(budget)], (), args.output, out)
                else:
                    _detail(budget, out)
                    out.writelines(f"{line}\n" for line in granted(budget))
                return 0
            assert isinstance(budget, TrustBudget)
            rows = trust_rows(budget, args.account)
            if args.output == "table":
                _trust_table(rows, out)
                out.writelines(f"{line.strip()}\n" for line in informative(budget))
                out.writelines(f"{line}\n" for line in granted(budget))
                out.writelines(f"{line}\n" for line in break_glass(budget))
                return 0
            emit(rows, (), args.output, out)
            return 0
        budgets = where.store.list()
        unreadable = where.store.unreadable()
        for budget in budgets:
            _current(budget, now)  # shown as the next charge would see it; nothing is written
        if args.output != "table":
            unread = [
                {"kind": k.kind, "metadata": {"name": k.name, "namespace": k.namespace}}
                | {"unreadable": why}
                for k, why in unreadable.items()
            ]
            emit([b.to_wire() for b in budgets] + unread, (), args.output, out)
            return 0
        if not budgets and not unreadable:
            out.write("no budgets here (load them with `budgetops apply -f`, or kubectl apply)\n")
        for budget in budgets:
            for line in summary(budget):
                out.write(f"{line}\n")
        for key, why in unreadable.items():
            out.write(
                f"{shown(str(key))}: does not read, so what it governs is refused until it "
                f"is fixed ({shown(why)})\n"
            )
        return 0


def cmd_list(args: argparse.Namespace, out: TextIO, path: Path) -> int:
    """Every budget's state; `--status Yellow,Red` keeps those in the given states."""
    now = system_clock()
    wanted = {s.strip().lower() for s in (args.status or "").split(",") if s.strip()}
    unknown = sorted(wanted - {state.lower() for state in (*BANDS, *ACCOUNT_STATES)})
    if unknown:
        raise ValueError(
            f"--status {','.join(unknown)}: not a state; give some of "
            f"{', '.join((*BANDS, *ACCOUNT_STATES[:2]))}"
        )
    rows: list[dict[str, Any]] = []
    with place(args, path) as where:
        for budget in where.store.list():
            if args.namespace and budget.metadata.namespace not in (None, "", args.namespace):
                continue
            _current(budget, now)
            if isinstance(budget, RiskBudget):
                rows.append(risk_row(budget))
            elif isinstance(budget, TrustBudget):
                rows += trust_rows(budget)
    rows = [r for r in rows if not wanted or r["status"].lower() in wanted]
    if args.output == "table":
        for row in rows:
            row["status"] = coloured(row["status"], out)
            row["used"] = (
                f"{row['consumed']}/{row['allocated']} RP"
                if row["kind"] == "RiskBudget"
                else f"{row['balance']} of {row['allocated']} {row['unit']} left"
            )
            row["who"] = shown(str(row.get("service") or row.get("account")))
            row["where"] = f"{row['kind']}/{row['namespace'] + '/' if row['namespace'] else ''}"
            row["where"] += row["name"]
    emit(rows, ("where", "who", "used", "percentUsed", "status", "resetsAt"), args.output, out)
    return 0


def cmd_history(args: argparse.Namespace, out: TextIO, path: Path) -> int:
    """Closed windows (and the current one), or one window with `--window`."""
    now = system_clock()
    with place(args, path) as where:
        budget = where.store.get(_risk_key(args, where.store))
    assert isinstance(budget, RiskBudget)
    _current(budget, now)
    rows = [
        {
            "window": h.window.key,
            "allocated": h.allocated,
            "consumed": h.consumed,
            "releases": h.entries,
            "bandReached": h.band_reached,
            "mttrHours": format_amount(h.reliability.mttr_hours)
            if h.reliability.mttr_hours is not None
            else "",
            "changeFailureRate": format_amount(h.reliability.change_failure_rate_percent)
            if h.reliability.change_failure_rate_percent is not None
            else "",
            "earned": h.earned_increase,
        }
        for h in budget.status.history
    ]
    current = risk_row(budget)
    rows.append(
        {
            "window": current["window"],
            "allocated": current["allocated"],
            "consumed": current["consumed"],
            "releases": sum(1 for e in budget.status.entries if e.action == "reserve"),
            "bandReached": budget.status.band_reached,
            "earned": budget.status.earned_increase,
            "current": True,
        }
    )
    if args.window:
        rows = [r for r in rows if r["window"] == args.window]
        if not rows:
            raise NotFound(f"{BudgetKey.of(budget)} has no window {args.window}")
    columns = ("window", "allocated", "consumed", "releases", "bandReached", "earned")
    emit(rows, columns, args.output, out)
    return 0


def cmd_receipts(args: argparse.Namespace, out: TextIO, path: Path) -> int:
    """A budget's recent entries: what was charged, settled or refused, with verdicts."""
    with place(args, path) as where:
        if args.service or args.namespace:
            key = _risk_key(args, where.store)
        elif args.budget:
            key = BudgetKey("TrustBudget", args.budget)
        else:
            raise ValueError("name the TrustBudget, or give --service (or -n with a RiskBudget)")
        budget = where.store.get(key)
    assert isinstance(budget, RiskBudget | TrustBudget)
    text = shown if args.output == "table" else str  # JSON and YAML escape for themselves
    rows = [
        {
            "at": format_time(e.at),
            "account": text(e.account),
            "action": e.action,
            "amount": format_amount(e.amount),
            "key": e.key,
            "object": text(e.object),
            "verdict": e.verdict[:19] + "…" if args.output == "table" and e.verdict else e.verdict,
        }
        for e in budget.status.entries
    ]
    emit(rows, ("at", "account", "action", "amount", "object", "verdict"), args.output, out)
    return 0


def cmd_leases(args: argparse.Namespace, out: TextIO, path: Path) -> int:
    """Every lease: its budget and account, holder, phase, granted, spent, remaining."""
    with place(args, path) as where:
        found = where.leases()
    rows = []
    text = shown if args.output == "table" else str
    for item in found:
        spec, status = item.get("spec", {}), item.get("status", {})
        budget_ref = spec.get("budgetRef", {})
        if args.budget and budget_ref.get("name") != args.budget:
            continue
        rows.append(
            {
                "name": item["metadata"]["name"],
                "budget": budget_ref.get("name", ""),
                "account": text(budget_ref.get("account", "")),
                "holder": text(spec.get("holder", {}).get("id", "")),
                "phase": status.get("phase", ""),
                "granted": status.get("granted", ""),
                "spent": status.get("spent", ""),
                "remaining": status.get("remaining", ""),
                "expiresAt": status.get("expiresAt", ""),
            }
        )
    columns = ("name", "budget", "account", "holder", "phase", "granted", "spent", "remaining")
    emit(rows, columns, args.output, out)
    return 0


BANDS: tuple[Band, ...] = ("Green", "Yellow", "Red", "Exhausted")
ACCOUNT_STATES = ("OK", "Low", "Exhausted")
"""What `list` shows for a TrustBudget account (RiskBudgets show their band)."""
