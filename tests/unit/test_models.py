"""Manifests: the examples parse, invalid ones fail with field paths, CRDs never drift."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from budgetops.apis.common import (
    _DURATION_PATTERN,
    format_duration,
    parse_amount,
    parse_duration,
)
from budgetops.apis.resources import ManifestError, TrustBudget, parse_manifest
from budgetops.cli.manifests import crd_files
from tests.conftest import EXAMPLES, ROOT

INVALID = sorted((EXAMPLES / "invalid").glob("*.yaml"))


def expectation(path: Path, prefix: str) -> str:
    for line in path.read_text().splitlines():
        if line.startswith(f"# {prefix}: "):
            return line.split(": ", 1)[1]
    raise AssertionError(f"{path.name} has no '# {prefix}:' line")


def contains(whole: Any, part: Any) -> bool:
    """Every key and value of `part` appears in `whole` (defaults may add more)."""
    if isinstance(part, dict):
        return isinstance(whole, dict) and all(
            key in whole and contains(whole[key], value) for key, value in part.items()
        )
    if isinstance(part, list):
        return (
            isinstance(whole, list)
            and len(whole) == len(part)
            and all(contains(w, p) for w, p in zip(whole, part, strict=True))
        )
    if isinstance(part, int) and isinstance(whole, str) and whole.replace(".", "").isdigit():
        return Decimal(whole) == part  # amounts are written back as exact decimal strings
    return bool(whole == part)


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_examples_are_valid_and_round_trip(path: Path) -> None:
    document = yaml.safe_load(path.read_text())
    budget = parse_manifest(document)
    wire = budget.to_wire()
    assert contains(wire["spec"], document["spec"]), "what the user wrote is kept as written"
    assert parse_manifest(wire) == budget


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.name)
def test_invalid_examples_are_rejected_with_the_field(path: Path) -> None:
    with pytest.raises(ManifestError) as raised:
        parse_manifest(yaml.safe_load(path.read_text()), source=path.name)
    assert expectation(path, "expect-model") in "\n".join(raised.value.errors)


def minimal_trust(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "budgetops.dev/v1alpha1",
        "kind": "TrustBudget",
        "metadata": {"name": "t"},
        "spec": {
            "subjects": {"users": ["alice"]},
            "match": [{"resource": "certificatesigningrequests"}],
            "initialBalance": 10,
        }
        | spec,
    }


@pytest.mark.parametrize(
    ("spec", "error"),
    [
        ({"cost": 0}, "spec.cost: must be greater than zero"),
        ({"cost": 0.5}, "spec.cost: write the amount 0.5 as a quoted string"),
        ({"cost": True}, "spec.cost: an amount must be a number"),
        ({"cost": "1.5"}, "spec: cost must be a whole number of points"),
        ({"resetInterval": "1w"}, "spec.resetInterval: '1w' is not a duration"),
        ({"accountKey": "user:${email}"}, "unknown variable ${email}"),
        ({"subjects": {"serviceAccounts": ["builder"]}}, "is not namespace/name"),
        ({"match": []}, "spec.match: List should have at least 1 item"),
        ({"unit": "EUR"}, "spec.unit: Input should be 'points' or 'USD'"),
    ],
)
def test_trust_budget_field_errors(spec: dict[str, Any], error: str) -> None:
    with pytest.raises(ManifestError) as raised:
        parse_manifest(minimal_trust(**spec))
    assert any(error in line for line in raised.value.errors), raised.value.errors


def test_wrong_api_version_and_kind_are_named() -> None:
    with pytest.raises(ManifestError, match=r"apiVersion: expected budgetops.dev/v1alpha1"):
        parse_manifest(minimal_trust() | {"apiVersion": "budgetops.dev/v1"})
    with pytest.raises(ManifestError, match=r"kind: expected one of"):
        parse_manifest(minimal_trust() | {"kind": "Budget"})


def test_amounts_are_exact() -> None:
    assert parse_amount("10.50") == Decimal("10.50")
    assert parse_amount(3) == Decimal(3)
    budget = TrustBudget.model_validate(
        minimal_trust(unit="USD", cost="0.10", initialBalance="100.00")
    )
    assert budget.to_wire()["spec"]["cost"] == "0.10"
    assert budget.to_wire()["spec"]["initialBalance"] == "100.00"


@pytest.mark.parametrize(
    "value", [10**15, "1000000000000000", "10000000000000000000000000001", Decimal("1E+30")]
)
def test_amounts_past_fifteen_digits_are_refused(value: object) -> None:
    """A 29-digit balance passed validation and was rounded by the first charge (Decimal
    keeps 28 digits): the ledger no longer balanced."""
    with pytest.raises(ValueError, match="at most 15 digits before the point"):
        parse_amount(value)
    assert parse_amount("000999999999999999.99") == Decimal("999999999999999.99")


@pytest.mark.parametrize("text", ["30s", "15m", "24h", "36h", "7d", "1h30m", "2d12h"])
def test_durations_round_trip(text: str) -> None:
    assert format_duration(parse_duration(text)) == text


def test_cost_overrides_pick_the_resource() -> None:
    budget = TrustBudget.model_validate(
        minimal_trust(
            costOverrides=[{"resource": "serviceaccounts", "subresource": "token", "cost": 5}]
        )
    )
    spec = budget.spec
    assert spec.cost_for(group="", resource="serviceaccounts", subresource="token") == 5
    assert spec.cost_for(group="", resource="serviceaccounts", subresource="") == 1


def test_committed_crds_match_the_models() -> None:
    """`budgetops crds -o crds` regenerates these; a model change without it fails here."""
    generated = crd_files()
    committed = {p.name: p.read_text() for p in (ROOT / "crds").glob("*.yaml")}
    assert committed == generated


def _walk(node: Any, path: str = "") -> list[str]:
    problems: list[str] = []
    if isinstance(node, dict):
        is_int_or_string = node.get("x-kubernetes-int-or-string")
        for bad in ("$ref", "anyOf", "oneOf", "allOf", "title", "$defs"):
            if bad in node and not (bad == "anyOf" and is_int_or_string):
                problems.append(f"{path}: {bad}")
        if is_int_or_string:
            assert node["anyOf"] == [{"type": "integer"}, {"type": "string"}], path
        if "properties" in node and node.get("type") != "object":
            problems.append(f"{path}: object without type")
        if not is_int_or_string and "type" not in node and path.count(".") > 1:
            problems.append(f"{path}: untyped")
        for key, value in node.items():
            if key in ("properties",) and isinstance(value, dict):
                for name, sub in value.items():
                    problems += _walk(sub, f"{path}.{name}")
            elif key in ("items", "additionalProperties"):
                problems += _walk(value, f"{path}[]")
    return problems


@pytest.mark.parametrize("name", sorted(n for n in crd_files() if n.startswith("budgetops.dev_")))
def test_crd_schemas_are_structural(name: str) -> None:
    crd = yaml.safe_load(crd_files()[name])
    version = crd["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    assert crd["spec"]["names"]["categories"] == ["budgets"]
    assert _walk(version["schema"]["openAPIV3Schema"], "root") == []


def test_chart_crds_match_the_models() -> None:
    """`budgetops crds -o charts/budgetops/crd-files` keeps the chart's copy in step."""
    chart = {p.name: p.read_text() for p in (ROOT / "charts/budgetops/crd-files").glob("*.yaml")}
    assert chart == crd_files()


@pytest.mark.parametrize(
    "text", ["99999999999999d", "10000d", "100000h", "24h\n", "\u0663d", "1d1d", ""]
)
def test_durations_past_the_pattern_are_refused_calmly(text: str) -> None:
    """An interval of 10**14 days escaped validation as an OverflowError, and a trailing
    newline or an Arabic-Indic digit passed here while the API server's pattern refused it."""
    with pytest.raises(ManifestError) as raised:
        parse_manifest(minimal_trust(resetInterval=text))
    assert any("spec.resetInterval" in line for line in raised.value.errors)


@given(
    st.tuples(
        st.integers(0, 9999),
        st.integers(0, 99999),
        st.integers(0, 999999),
        st.integers(0, 10**8 - 1),
    ).filter(any)
)
def test_every_duration_the_pattern_allows_is_written_back_in_it(parts: tuple[int, ...]) -> None:
    """What is read is written in a form that is read again, even past 9999 days in total;
    and the largest interval still leaves room for a window's end date."""
    text = "".join(f"{n}{unit}" for n, unit in zip(parts, "dhms", strict=True) if n)
    value = parse_duration(text)
    again = format_duration(value)
    assert re.fullmatch(_DURATION_PATTERN, again), again
    assert parse_duration(again) == value
    assert datetime(2026, 12, 3, tzinfo=UTC) + 10 * value < datetime.max.replace(tzinfo=UTC)
