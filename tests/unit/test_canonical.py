"""The config hash is stable across spellings and sensitive to every limit."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from budgetops.apis.riskbudget import UnknownsBudget
from budgetops.engine.canonical import canonical_json, config_hash
from budgetops.engine.unknowns import UnknownCounts, check_unknowns

NOW = datetime(2025, 12, 25, 12, tzinfo=UTC)


def test_canonical_json_sorts_keys_and_normalises_numbers() -> None:
    value = {"b": [Decimal("2.50"), 1, None, True], "a": "é"}
    assert canonical_json(value) == '{"a":"é","b":[2.5,1,null,true]}'.encode()


def test_config_hash_is_sha256_of_the_canonical_bytes() -> None:
    value = {"maxUnknownCount": 10, "action": "warn"}
    digest = hashlib.sha256(b'{"action":"warn","maxUnknownCount":10}').hexdigest()
    assert config_hash(value) == f"sha256:{digest}"


def test_floats_are_refused() -> None:
    with pytest.raises(TypeError, match="cannot hold float"):
        canonical_json({"x": 2.5})


def limits(**overrides: object) -> UnknownsBudget:
    base: dict[str, object] = {
        "maxUnknownCount": 10,
        "maxCumulativeUncertainty": "2.50",
        "action": "warn",
        "reasonLimits": {"Reachability": 5, "Identity": 3},
    }
    return UnknownsBudget.model_validate(base | overrides)


def test_equal_limits_hash_equally_however_written() -> None:
    one = check_unknowns(limits(), UnknownCounts(), now=NOW)
    two = check_unknowns(
        limits(maxCumulativeUncertainty="2.5", reasonLimits={"Identity": 3, "Reachability": 5}),
        UnknownCounts(),
        now=NOW,
    )
    assert one.config_hash == two.config_hash
    assert (
        one.config_hash
        != check_unknowns(limits(action="block"), UnknownCounts(), now=NOW).config_hash
    )


def test_budget_check_predicate_names_every_violation() -> None:
    counts = UnknownCounts(
        by_reason={"Reachability": 8, "Identity": 7}, cumulative_uncertainty=Decimal("3.1")
    )
    config = limits(action="block")
    check = check_unknowns(config, counts, now=NOW)
    predicate = check.to_predicate(config, counts)
    assert predicate["result"] == "fail"
    assert predicate["actualCounts"] == {
        "total": 15,
        "cumulativeUncertainty": "3.10",
        "byReason": {"Identity": 7, "Reachability": 8},
    }
    assert predicate["violations"] == [
        {"type": "total", "limit": 10, "actual": 15},
        {"type": "uncertainty", "limit": "2.50", "actual": "3.10"},
        {"type": "reason", "limit": 3, "actual": 7, "reason": "Identity"},
        {"type": "reason", "limit": 5, "actual": 8, "reason": "Reachability"},
    ]
    assert predicate["evaluatedAt"] == "2025-12-25T12:00:00Z"
    assert predicate["configHash"].startswith("sha256:")
    assert len(predicate["configHash"]) == len("sha256:") + 64


def test_within_limits_passes() -> None:
    check = check_unknowns(limits(), UnknownCounts(by_reason={"Reachability": 5}), now=NOW)
    assert (check.result, check.violations) == ("pass", ())
