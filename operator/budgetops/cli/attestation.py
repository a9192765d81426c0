"""`budgetops verdict`, `verify`, `audit` and `keys`: decisions proved after the fact.

Each works on the embedded ledger (its verdicts table, its audit table and the keyring in
its secrets folder) or, with `--kubeconfig`, on the cluster (the verdict ConfigMaps and the
keyring Secret in `--namespace`; the audit trail is the operator's stdout, which `verify
--audit FILE` reads from a file or `-`).

Exit codes a script can rely on: 0 verified, 1 a signature or chain does not hold, 2 bad
input or nothing found, 3 the signature holds but the budget's configuration has changed
since (drift), or the budget is gone.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from budgetops.adapters.keyring import key_name, read_keyring, rotate_keyring, verdict_keyring
from budgetops.apis.audit import AuditHead
from budgetops.apis.common import format_time
from budgetops.apis.resources import Budget, BudgetKey, RiskBudget, TrustBudget
from budgetops.crypto import dsse
from budgetops.engine import audit
from budgetops.engine.canonical import compact_json
from budgetops.engine.verdicts import (
    RISK_PREDICATE,
    TRUST_PREDICATE,
    applied,
    verdict_digest,
)
from budgetops.store import BudgetStore, NotFound

from .target import Place, place, same_place

EXIT_FAILED = 1
EXIT_INVALID = 2
EXIT_DRIFT = 3


def pem_keys(path: str) -> list[dsse.VerifyKey]:
    """Every public key in a PEM file (`keys export` writes one block per key)."""
    text = Path(path).read_bytes()
    marker = b"-----BEGIN PUBLIC KEY-----"
    blocks = [marker + block for block in text.split(marker)[1:]]
    if not blocks:
        raise ValueError(f"{path} holds no PEM public key (-----BEGIN PUBLIC KEY-----)")
    try:
        return [dsse.VerifyKey.from_pem(block) for block in blocks]
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None


def verify_keys(args: argparse.Namespace, where: Place) -> list[dsse.VerifyKey]:
    """Every key of the `--public-key` files if given, else every key id of the keyring."""
    if args.public_key:
        return [key for path in args.public_key for key in pem_keys(path)]
    try:
        return list(read_keyring(where.keys, where.namespace).verifiers.values())
    except LookupError as error:
        raise ValueError(
            f"no verdict keyring to verify with ({error}); give --public-key"
        ) from None


def envelope_check(keys: list[dsse.VerifyKey]) -> audit.Check:
    """How the chain verifier checks a checkpoint's or verdict's envelope."""

    def check(document: Any, payload: bytes | None) -> str | None:
        try:
            envelope = dsse.Envelope.from_json(document)
            dsse.verify(envelope, keys)
        except (dsse.InvalidEnvelope, dsse.BadSignature) as error:
            return str(error)
        if payload is not None and envelope.payload != payload:
            return "it signs another chain head than the record states"
        return None

    return check


@dataclass(frozen=True)
class VerdictCheck:
    """A verdict whose signature holds, and whether its budget still applies its config."""

    digest: str
    keyid: str
    statement: dict[str, Any]
    budget: BudgetKey
    attested: str
    current: str | None
    """The config hash of the budget as it is now; None when it no longer exists."""

    @property
    def drifted(self) -> bool:
        return self.current != self.attested


def budget_of(predicate: dict[str, Any]) -> BudgetKey:
    described = predicate.get("budget")
    if not isinstance(described, dict) or described.get("kind") not in (
        "RiskBudget",
        "TrustBudget",
    ):
        raise ValueError("the verdict names no RiskBudget or TrustBudget")
    return BudgetKey(described["kind"], str(described["name"]), str(described.get("namespace", "")))


def current_hash(budget: Budget) -> str:
    """The hash of the configuration the budget applies now (its allocation as adjusted)."""
    if isinstance(budget, RiskBudget | TrustBudget):
        return applied(budget)[1]
    raise ValueError(f"{budget.kind} has no verdicts")


def check_verdict(document: Any, keys: list[dsse.VerifyKey], store: BudgetStore) -> VerdictCheck:
    """Verify an envelope's signature, read its statement, and recompute its config hash
    from the budget as stored now. Raises InvalidEnvelope, BadSignature or ValueError."""
    envelope = dsse.Envelope.from_json(document)
    keyid = dsse.verify(envelope, keys, payload_type=dsse.PAYLOAD_TYPE)
    try:
        statement = json.loads(envelope.payload)
        predicate = statement["predicate"]
        attested = predicate["budgetCheck"]["configHash"]
    except (ValueError, KeyError, TypeError):
        raise ValueError("the envelope's payload is not a BudgetOps verdict statement") from None
    if statement.get("predicateType") not in (RISK_PREDICATE, TRUST_PREDICATE):
        raise ValueError(f"predicateType {statement.get('predicateType')!r} is not a verdict")
    key = budget_of(predicate)
    try:
        current: str | None = current_hash(store.get(key))
    except NotFound:
        current = None
    digest = verdict_digest(envelope.payload)
    return VerdictCheck(digest, keyid, statement, key, attested, current)


def signed_answer(where: Place, document: dict[str, Any]) -> dict[str, Any]:
    """A statement `check` answers with, as a verdict `verify` accepts: signed by the
    verdict keyring, charging and writing nothing. Embedded, the keyring is made if there
    is none yet (as `serve` would); in a cluster it is read from its Secret, so a CI gate's
    identity needs `get` on that one Secret."""
    try:
        ring = (
            read_keyring(where.keys, where.namespace)
            if where.namespace
            else verdict_keyring(where.keys, "", first_key=key_name())
        )
    except (LookupError, ValueError, OSError) as error:
        raise ValueError(f"check signs its answer with the verdict keyring: {error}") from None
    return dsse.sign(compact_json(document), ring.active).to_json()


def _read_json(source: str) -> Any:
    text = sys.stdin.read() if source == "-" else Path(source).read_text()
    try:
        return json.loads(text)
    except ValueError as error:
        raise ValueError(f"{source} is not JSON: {error}") from None


def _verify_envelope(args: argparse.Namespace, where: Place, out: TextIO) -> int:
    keys = verify_keys(args, where)
    try:
        found = check_verdict(_read_json(args.envelope), keys, where.store)
    except dsse.InvalidEnvelope as error:
        out.write(f"invalid: not a DSSE envelope: {error}\n")
        return EXIT_INVALID
    except dsse.BadSignature as error:
        out.write(f"NOT VERIFIED: {error}\n")
        return EXIT_FAILED
    predicate = found.statement["predicate"]
    decision = predicate.get("decision", {})
    verdict = "allowed" if decision.get("allowed") else "denied"
    out.write(
        f"verified: {found.digest} signed by {found.keyid}\n"
        f"  {predicate.get('subject', {}).get('kind', '?')} "
        f"{predicate.get('subject', {}).get('namespace', '')}/"
        f"{predicate.get('subject', {}).get('name', '?')}: {verdict} ({decision.get('reason')}) "
        f"by {found.budget} at {predicate['budgetCheck'].get('evaluatedAt')}\n"
    )
    if found.current is None:
        out.write(f"  drift: {found.budget} no longer exists\n")
        return EXIT_DRIFT
    if found.drifted:
        out.write(
            f"  drift: the configuration changed since: attested {found.attested}, "
            f"now {found.current}\n"
        )
        return EXIT_DRIFT
    out.write(f"  configuration unchanged ({found.attested})\n")
    return 0


def _heads(store: BudgetStore) -> dict[str, tuple[str, AuditHead]]:
    return {
        str(BudgetKey.of(budget)): (budget.metadata.uid or "", budget.status.audit_head)
        for budget in store.list()
        if isinstance(budget, RiskBudget | TrustBudget)
    }


def _verify_audit(args: argparse.Namespace, where: Place, out: TextIO) -> int:
    sources: list[str] = args.audit
    labels: list[str] | None = None  # where each line of several logs merged came from
    if "db" in sources:
        if where.audit_lines is None:
            raise ValueError("--audit db reads the embedded ledger; in a cluster give a file")
        if len(sources) > 1:
            raise ValueError("--audit db is the embedded ledger's whole trail: give it alone")
        lines: list[str] | tuple[str, ...] = where.audit_lines()
    elif len(sources) == 1:
        lines = _read_log(sources[0])
    else:  # one log per replica: each chain's records in seq order across them
        merged = audit.merge_logs([_read_log(source) for source in sources])
        lines = [text for _, _, text in merged]
        labels = [f"{sources[index]} line {number}" for index, number, _ in merged]
    check = envelope_check(verify_keys(args, where))
    heads = _heads(where.store)
    if args.budget:
        heads = {name: head for name, head in heads.items() if name in args.budget}
    problems: list[str] = []
    if sources != ["db"] and where.audit_lines is not None:
        # Embedded, a file is a witness: the ledger's own trail must hold against its heads,
        # and every record the witness kept must be in it unchanged.
        ledger_lines = where.audit_lines()
        ledger = audit.verify_chain(ledger_lines, heads=heads, check=check, budgets=args.budget)
        problems += [f"the ledger's {problem}" for problem in ledger.problems]
        problems += map(str, audit.compare(lines, ledger_lines, budgets=args.budget))
        heads = {}
    report = audit.verify_chain(
        lines, heads=heads, check=check, budgets=args.budget, partial=args.partial
    )
    for name, counts in report.summary().items():
        witnessed = f", signed head at {counts['signedHead']}" if counts["signedHead"] else ""
        out.write(
            f"{name}: {counts['records']} records through {counts['lastSeq']}, "
            f"{counts['checkpoints']} signed checkpoints{witnessed}\n"
        )
    found = [
        f"{labels[problem.line - 1]}: {problem.budget}: {problem.message}"
        if labels is not None and 0 < problem.line <= len(labels)
        else str(problem)
        for problem in report.problems
    ]
    for problem in [*found, *problems]:
        out.write(f"BROKEN: {problem}\n")
    if report.ok and not problems:
        out.write(
            f"audit trail verified: {sum(c.records for c in report.chains.values())} records\n"
        )
        return 0
    return EXIT_FAILED


def _read_log(source: str) -> list[str]:
    return sys.stdin.read().splitlines() if source == "-" else Path(source).read_text().splitlines()


def cmd_verify(args: argparse.Namespace, out: TextIO, ledger: Path) -> int:
    """Check an envelope (signature, config drift) or an audit log (chain, checkpoints)."""
    if not args.envelope and not args.audit:
        raise ValueError("give an envelope file (or -), or --audit FILE|-|db")
    with place(args, ledger) as where:
        code = _verify_envelope(args, where, out) if args.envelope else 0
        if args.audit:
            code = max(code, _verify_audit(args, where, out))
        return code


def _workload(args: argparse.Namespace) -> str:
    """The entry's object for `Kind/name` in `--namespace`: as admission describes it."""
    kind, _, name = args.workload.partition("/")
    if not kind or not name:
        raise ValueError(f"{args.workload!r}: name the workload as KIND/NAME, e.g. deployment/api")
    where = f" {args.namespace}/" if args.namespace else "/"
    return f"{kind.lower()}{where}{name}"


@dataclass(frozen=True)
class Found:
    """A verdict on a workload: where it was found, and what its entry says (if any)."""

    at: str
    budget: str
    digest: str
    object: str
    action: str = ""


def latest_verdict(
    budgets: list[Budget], kept: Sequence[tuple[str, str, str, str]], target: str
) -> Found | None:
    """The newest verdict whose object is `target` (kind compared in any case): among the
    budgets' entries (which say what it did) and the verdicts the store keeps (which
    outlast the entries a busy budget rolls over)."""
    found = [
        (
            format_time(entry.at),
            1,
            position,
            Found(
                format_time(entry.at),
                str(BudgetKey.of(budget)),
                entry.verdict,
                entry.object,
                entry.action,
            ),
        )
        for budget in budgets
        if isinstance(budget, RiskBudget | TrustBudget)
        for position, entry in enumerate(budget.status.entries)
        if entry.verdict and _same_object(entry.object, target)
    ]
    found += [
        (at, 0, position, Found(at, budget, digest, described))
        for position, (budget, digest, at, described) in enumerate(kept)
        if _same_object(described, target)
    ]
    if not found:
        return None
    return max(found, key=lambda item: item[:3])[3]  # the later of one second, entry first


def _same_object(described: str, target: str) -> bool:
    kind, _, rest = described.partition(" ") if " " in described else described.partition("/")
    want_kind, _, want_rest = target.partition(" ") if " " in target else target.partition("/")
    return kind.lower() == want_kind and rest == want_rest


def cmd_verdict(args: argparse.Namespace, out: TextIO, ledger: Path) -> int:
    """The latest verdict on a workload: its digest, and its envelope if still kept."""
    target = _workload(args)
    with place(args, ledger) as where:
        found = latest_verdict(where.store.list(), where.verdicts(), target)
        if found is None:
            out.write(f"no verdict on {args.workload} in the budgets' entries or kept verdicts\n")
            return EXIT_INVALID
        envelope = where.envelope(found.budget, found.digest)
    if args.output == "json":
        if envelope is None:
            out.write(f"the envelope of {found.digest} is no longer kept\n")
            return EXIT_INVALID
        out.write(json.dumps(envelope, indent=2) + "\n")
        return 0
    predicate = None
    if envelope is not None:
        predicate = json.loads(base64.b64decode(envelope["payload"]))["predicate"]
    action = found.action
    if not action and predicate is not None:
        action = "admitted" if predicate["decision"]["allowed"] else "deny"
    out.write(
        f"{found.digest}\n  {found.object}: {action or 'decided'} by {found.budget} at {found.at}\n"
    )
    if predicate is None:
        out.write("  envelope: no longer kept (it is in the audit trail)\n")
    else:
        namespace = f" -n {args.namespace}" if args.namespace else ""
        prog, there = getattr(args, "prog", "budgetops"), same_place(args)
        out.write(
            f"  decision: {predicate['decision']['reason']}, "
            f"check {predicate['budgetCheck']['result']}, "
            f"config {predicate['budgetCheck']['configHash']}\n"
            f"  fetch and verify: {prog} verdict {args.workload}{namespace}{there} -o json"
            f" | {prog} verify -{there}\n"
        )
    return 0


def _of_kind(line: str, kinds: Sequence[str]) -> bool:
    """Whether a record's action is one of `kinds`, or of its family (`break-glass` is also
    `break-glass-refused`)."""
    action = json.loads(line).get("action", "")
    return any(action == kind or action.startswith(f"{kind}-") for kind in kinds)


def cmd_audit(args: argparse.Namespace, out: TextIO, ledger: Path) -> int:
    """Print the embedded ledger's audit trail as JSON Lines (for jq, or verify), or only
    the records of the `--kind`s asked for (e.g. every break-glass use and refusal)."""
    with place(args, ledger) as where:
        if where.audit_lines is None:
            raise ValueError("in a cluster the audit trail is the operator's stdout (kubectl logs)")
        for line in where.audit_lines():
            if args.kind and not _of_kind(line, args.kind):
                continue
            out.write(line if line.endswith("\n") else line + "\n")
    return 0


def cmd_keys(args: argparse.Namespace, out: TextIO, ledger: Path) -> int:
    """List the verdict keyring, or rotate it (a new key signs; old ones still verify)."""
    with place(args, ledger) as where:
        if args.action == "rotate":
            name = args.name or key_name()
            try:
                ring = rotate_keyring(
                    where.keys, where.namespace, name=name, algorithm=args.algorithm
                )
            except LookupError:
                ring = verdict_keyring(
                    where.keys, where.namespace, first_key=name, algorithm=args.algorithm
                )
            out.write(
                f"signing with {ring.active.keyid} ({ring.active.algorithm}); "
                "restart the servers to sign with it\n"
            )
        else:
            try:
                ring = read_keyring(where.keys, where.namespace)
            except LookupError as error:
                raise ValueError(
                    f"{error}: `budgetops serve` makes one on first start, or "
                    "`budgetops keys rotate` now"
                ) from None
        for keyid, key in sorted(ring.verifiers.items()):
            role = "signs" if keyid == ring.active.keyid else "verifies"
            out.write(f"{keyid} {key.algorithm} {role}\n")
        if args.action == "export":
            for key in ring.verifiers.values():
                out.write(key.to_pem().decode())
    return 0
