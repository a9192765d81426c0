"""Which budgets an admission request charges, under which account, at what cost. Pure.

A request the budgets cannot be charged for as sent (a risk-points annotation that is not a
number, an account key the requester lacks a value for) is refused with a message saying
exactly what to fix; that is a denial, never a crash.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Any, get_args

from budgetops.admission.review import AdmissionRequest, UserInfo
from budgetops.apis.names import unprintable
from budgetops.apis.numbers import (
    PLACES,
    WHOLE_DIGITS,
    NumberError,
    amount,
    counts,
    quoted,
    whole,
)
from budgetops.apis.resources import Budget, BudgetKey, RiskBudget, TrustBudget
from budgetops.apis.riskbudget import (
    ANNOTATION_UNCERTAINTY,
    ANNOTATION_UNKNOWNS,
    MAX_RISK_POINTS,
    ChangeClass,
    LabelSelector,
)
from budgetops.apis.trustbudget import TEMPLATE_VARIABLE, SubjectSet, TrustBudgetSpec
from budgetops.engine.charges import Classified as Classified  # noqa: PLC0414
from budgetops.engine.charges import Refused as Refused  # noqa: PLC0414
from budgetops.engine.charges import RiskCharge as RiskCharge  # noqa: PLC0414
from budgetops.engine.charges import TrustCharge as TrustCharge  # noqa: PLC0414
from budgetops.engine.decisions import BreakGlassAsk, Release
from budgetops.engine.unknowns import UnknownCounts

NEVER_CHARGED_GROUPS = frozenset({"system:nodes", "system:bootstrappers"})
"""Kubelet certificate rotation and node bootstrap must never depend on a budget."""

NEVER_CHARGED_NAMESPACES = frozenset({"kube-system"})

WORKLOADS: dict[tuple[str, str], tuple[str, ...]] = {
    ("apps", "deployments"): ("spec", "template"),
    ("apps", "statefulsets"): ("spec", "template"),
    ("apps", "daemonsets"): ("spec", "template"),
    ("batch", "jobs"): ("spec", "template"),
    ("batch", "cronjobs"): ("spec", "jobTemplate", "spec", "template"),
}
"""Workload resources a RiskBudget charges, and where each keeps its pod template."""

EPHEMERAL = frozenset({("", "serviceaccounts", "token")})
"""Requests that create nothing a watch could see later (a TokenRequest is never stored):
their charge is settled at once instead of reserved until the object appears."""

ANNOTATION_BREAK_GLASS = "budgetops.dev/break-glass"
"""Its value is the reason; its presence asks to pass an exhausted TrustBudget."""

CERT_MANAGER_REQUESTS = ("cert-manager.io", "certificaterequests")
CERTIFICATES = frozenset(
    {("certificates.k8s.io", "certificatesigningrequests"), CERT_MANAGER_REQUESTS}
)

_GO_DURATION = re.compile(r"([0-9]{1,9}(?:\.[0-9]{1,9})?)(h|ms|m|s)")
"""Digits bounded so that no duration overflows `timedelta` (at most ~114,000 years)."""

EXPIRATION_SECONDS = (600, 2**31 - 1)
"""What Kubernetes allows in `spec.expirationSeconds` (CSR, TokenRequest): int32, from 10m."""


@dataclass(frozen=True)
class Identity:
    """Who may never be charged, besides nodes, bootstrappers and kube-system."""

    own_service_account: str = ""


def in_set(subjects: SubjectSet, user: UserInfo) -> bool:
    """Whether `user` is named by users, groups, service accounts (`ns/name`, `ns/*`) or globs."""
    return subjects.names(user.username, user.groups)


def never_charged(request: AdmissionRequest, identity: Identity) -> bool:
    """Nodes, bootstrappers, kube-system and BudgetOps itself pass untouched."""
    user = request.user_info
    if NEVER_CHARGED_GROUPS.intersection(user.groups):
        return True
    if request.namespace in NEVER_CHARGED_NAMESPACES:
        return True
    service_account = user.service_account()
    if service_account is not None and service_account[0] in NEVER_CHARGED_NAMESPACES:
        return True
    return bool(identity.own_service_account) and user.username == identity.own_service_account


def requester(spec: TrustBudgetSpec, request: AdmissionRequest) -> UserInfo:
    """Who the budget charges: the requester, or for a CertificateRequest that cert-manager
    created on someone's behalf, the one its requester annotation names."""
    user = request.user_info
    if (request.resource.group, request.resource.resource) != CERT_MANAGER_REQUESTS:
        return user
    if user.username not in spec.cert_manager.controllers:
        return user
    named = request.annotations().get(spec.cert_manager.requester_annotation, "").strip()
    return UserInfo(username=named) if named else user


def account_keys(spec: TrustBudgetSpec, request: AdmissionRequest) -> list[str]:
    """Render the budget's account key template for this requester: one account, or with
    `${group}` one per group of the requester that the budget names, each of which is
    charged (all or nothing), so membership in a second group escapes no limit.

    `${namespace}` is the service account's namespace in a template that also names
    `${name}` (the service-account form), otherwise the namespace of the request (for
    cluster-scoped objects, the requesting service account's namespace).
    """
    user = requester(spec, request)
    named = set(spec.subjects.groups)
    governed = [g for g in dict.fromkeys(user.groups) if g in named]
    if "${group}" not in spec.account_key or not governed:
        return [_account_key(spec, request, user, None)]
    return [_account_key(spec, request, user, group) for group in governed]


def _account_key(
    spec: TrustBudgetSpec, request: AdmissionRequest, user: UserInfo, group: str | None
) -> str:
    service_account = user.service_account()
    template = spec.account_key
    values: dict[str, str] = {"username": user.username}
    if group is not None:
        values["group"] = group
    if service_account is not None:
        values["name"] = service_account[1]
    uses_name = "${name}" in template
    namespace = (
        service_account[0]
        if service_account and (uses_name or not request.namespace)
        else request.namespace
    )
    if namespace:
        values["namespace"] = namespace
    missing = sorted(set(TEMPLATE_VARIABLE.findall(template)) - values.keys())
    if missing:
        names = ", ".join(f"${{{name}}}" for name in missing)
        raise Refused(
            f"BudgetOps cannot name the account for this request: the account key {template} "
            f"needs {names}, which {user.username or 'this requester'} does not have here."
        )
    return TEMPLATE_VARIABLE.sub(lambda m: values[m.group(1)], template)


def _go_duration(text: str) -> timedelta | None:
    """cert-manager writes durations the Go way (`1h0m0s`, `90m`); None if unreadable or 0."""
    parts = _GO_DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text.strip():
        return None
    scale = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    seconds = sum(float(n) * scale[u] for n, u in parts)
    return timedelta(seconds=seconds) if seconds > 0 else None


def certificate_ttl(request: AdmissionRequest) -> timedelta | None:
    """The lifetime a certificate request asks for: CSR `expirationSeconds`, cert-manager
    `duration`; None when it states none (the signer's default then applies). A stated
    `expirationSeconds` outside what Kubernetes allows is refused: 0 or -1 must never pass
    as a short lifetime, nor 1e999 or NaN crash the webhook."""
    spec = (request.object or {}).get("spec") or {}
    if not isinstance(spec, dict):
        return None
    if "expirationSeconds" in spec:
        seconds = spec["expirationSeconds"]
        low, high = EXPIRATION_SECONDS
        if isinstance(seconds, int) and not isinstance(seconds, bool) and low <= seconds <= high:
            return timedelta(seconds=seconds)
        raise Refused(
            f"spec.expirationSeconds must be a whole number of seconds from {low} to {high}, "
            f"not {quoted(seconds)}."
        )
    duration = spec.get("duration")
    return _go_duration(duration) if isinstance(duration, str) else None


def break_glass_ask(
    spec: TrustBudgetSpec, request: AdmissionRequest, budget: str = ""
) -> BreakGlassAsk | None:
    """The request's break-glass ask of TrustBudget `budget`, if it carries the annotation."""
    reason = request.annotations().get(ANNOTATION_BREAK_GLASS)
    if reason is None:
        return None
    resource = (request.resource.group, request.resource.resource)
    rules = spec.break_glass
    user = requester(spec, request)
    # The reason and the user are kept in the budget's status and audit trail, and echoed to
    # the requester's terminal: the account key alone may not hold the username.
    for what, text in (
        (ANNOTATION_BREAK_GLASS, reason),
        ("the requester's username", user.username),
    ):
        problem = unprintable(text)
        if problem is not None:
            raise Refused(f"{what}: {problem}.")
    # Whoever writes a Certificate writes the requester annotation cert-manager copies: it
    # may bill the named person, but it is no proof that they asked to break the glass.
    on_behalf = user is not request.user_info
    return BreakGlassAsk(
        user=user.username,
        reason=reason,
        permitted=not on_behalf and rules is not None and in_set(rules.subjects, user),
        ttl=certificate_ttl(request),
        certificate=resource in CERTIFICATES,
        on_behalf=on_behalf,
        budget=budget,
    )


def _matches_resource(spec: TrustBudgetSpec, request: AdmissionRequest) -> bool:
    resource = request.resource
    return any(
        m.group == resource.group
        and m.resource == resource.resource
        and m.subresource == request.sub_resource
        and request.operation in m.operations
        for m in spec.match
    )


def classify_trust(budgets: Iterable[TrustBudget], request: AdmissionRequest) -> list[TrustCharge]:
    """One charge per account of each TrustBudget that governs this requester for this
    resource. A budget charging several accounts (several groups) keys each apart, since
    one key is charged once per budget."""
    charges: list[TrustCharge] = []
    for budget in budgets:
        spec = budget.spec
        if not _matches_resource(spec, request):
            continue
        user = requester(spec, request)
        if not in_set(spec.subjects, user) or in_set(spec.subjects.exclude, user):
            continue
        try:
            accounts = account_keys(spec, request)
        except Refused as refusal:
            raise Refused(f"{BudgetKey.of(budget)}: {refusal}") from None
        uid = request.object_uid()
        resource = request.resource
        charges.extend(
            TrustCharge(
                budget=BudgetKey.of(budget),
                account=account,
                cost=spec.cost_for(
                    group=resource.group,
                    resource=resource.resource,
                    subresource=request.sub_resource,
                ),
                key=uid if len(accounts) == 1 else f"{uid}/{_digest(account)}",
                ref=request.describe(),
                witness=request.witness(),
                settle_now=(resource.group, resource.resource, request.sub_resource) in EPHEMERAL,
                break_glass=break_glass_ask(spec, request, budget.metadata.name),
                fail_open=spec.fail_mode == "failOpen",
            )
            for account in accounts
        )
    return charges


def _dig(document: dict[str, Any] | None, path: tuple[str, ...]) -> Any:
    node: Any = document or {}
    for part in path:
        node = node.get(part) if isinstance(node, dict) else None
    return node


def selects(selector: LabelSelector, labels: dict[str, str]) -> bool:
    """Kubernetes label-selector semantics; an empty selector selects everything."""
    if any(labels.get(key) != value for key, value in selector.match_labels.items()):
        return False
    for term in selector.match_expressions:
        present = term.key in labels
        if term.operator == "Exists" and not present:
            return False
        if term.operator == "DoesNotExist" and present:
            return False
        if term.operator == "In" and labels.get(term.key) not in term.values:
            return False
        if term.operator == "NotIn" and present and labels[term.key] in term.values:
            return False
    return True


def _points(text: str, annotation: str) -> int:
    try:
        return whole(text, low=0, high=MAX_RISK_POINTS, of="risk points")
    except NumberError as error:
        raise Refused(f"{annotation} {error}.") from None


def _change_class(text: str, annotation: str) -> ChangeClass:
    allowed: tuple[ChangeClass, ...] = get_args(ChangeClass)
    for change_class in allowed:
        if text.strip() == change_class:
            return change_class
    raise Refused(f"{annotation} must be one of {', '.join(allowed)}, not {text!r}.")


def _unknowns(annotations: dict[str, str]) -> UnknownCounts | None:
    """The release's unknowns, read as `budgetops check --unknowns` reads them."""
    counts_text = annotations.get(ANNOTATION_UNKNOWNS)
    uncertainty_text = annotations.get(ANNOTATION_UNCERTAINTY)
    if counts_text is None and uncertainty_text is None:
        return None
    try:
        by_reason = {} if counts_text is None else counts(counts_text)
    except NumberError as error:
        raise Refused(f"{ANNOTATION_UNKNOWNS} {error}.") from None
    uncertainty = Decimal(0)
    if uncertainty_text is not None:
        try:
            uncertainty = amount(uncertainty_text)
        except NumberError:
            raise Refused(
                f"{ANNOTATION_UNCERTAINTY} must be a non-negative number with at most "
                f"{PLACES} decimals and {WHOLE_DIGITS} digits before the point, "
                f"not {quoted(uncertainty_text)}."
            ) from None
    return UnknownCounts(by_reason=by_reason, cumulative_uncertainty=uncertainty)


def _digest(value: Any) -> str:
    """A short digest of `value`'s JSON: which pod template, which account."""
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


def _release_key(
    request: AdmissionRequest, template: Any, release_id: str | None, annotation: str
) -> tuple[str, str | None]:
    """The release's key and, for a declared release id, what it is charged for.

    A declared id is remembered for the window with the object and its pod template's
    digest: only that object with that template replays it for free. Otherwise the key is
    the object's uid (plus the template's digest on updates), which only the API server's
    retries of the same request send again.
    """
    if release_id is not None:
        declared = release_id.strip()
        if not declared:
            raise Refused(f"{annotation} is empty: set it to the release's id, or remove it.")
        of = f"{request.describe()}, pod template {_digest(template)}"
        return f"release:{declared}", of
    if request.operation == "CREATE":
        return request.object_uid(), None
    return f"{request.object_uid()}/{_digest(template)}", None


def classify_risk(budgets: Iterable[RiskBudget], request: AdmissionRequest) -> list[RiskCharge]:
    """One charge per RiskBudget selecting this workload, when its pod template is new."""
    path = WORKLOADS.get((request.resource.group, request.resource.resource))
    if path is None or request.sub_resource or request.operation not in ("CREATE", "UPDATE"):
        return []
    template = _dig(request.object, path)
    if request.operation == "UPDATE" and template == _dig(request.old_object, path):
        return []  # scaling, labels, annotations, status: no release, no charge
    selected = [
        b
        for b in budgets
        if b.metadata.namespace == request.namespace and selects(b.spec.selector, request.labels())
    ]
    charges = []
    annotations = request.annotations()
    for budget in selected:
        declared = budget.spec.release
        points_text = annotations.get(declared.risk_points_annotation)
        class_text = annotations.get(declared.change_class_annotation)
        key, of = _release_key(
            request,
            template,
            annotations.get(declared.release_id_annotation),
            declared.release_id_annotation,
        )
        release = Release(
            key=key,
            points=(
                declared.default_risk_points
                if points_text is None
                else _points(points_text, declared.risk_points_annotation)
            ),
            change_class=(
                declared.default_change_class
                if class_text is None
                else _change_class(class_text, declared.change_class_annotation)
            ),
            ref=request.describe(),
            unknowns=_unknowns(annotations),
            witness=request.witness(),
            of=of,
        )
        charges.append(
            RiskCharge(
                budget=BudgetKey.of(budget),
                release=release,
                fail_open=budget.spec.fail_mode == "failOpen",
            )
        )
    return charges


def classify(
    budgets: Iterable[Budget], request: AdmissionRequest, identity: Identity
) -> Classified:
    """Every charge this request owes; nothing for identities that are never charged."""
    if never_charged(request, identity):
        return Classified()
    listed = list(budgets)
    return Classified(
        trust=classify_trust((b for b in listed if isinstance(b, TrustBudget)), request),
        risk=classify_risk((b for b in listed if isinstance(b, RiskBudget)), request),
    )
