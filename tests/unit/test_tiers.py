"""The tier table: validated with clear errors, read from a file at start and on change, the
built-in one by default, and a tier the table lacks refused where a budget is applied or a
window is opened, never when a stored budget is read."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from budgetops.adapters.tierfile import MAX_BYTES, TierFile, load, parse
from budgetops.apis import tiers
from budgetops.apis.resources import ManifestError, RiskBudget, parse_manifest
from budgetops.apis.tiers import BUILT_IN, Tier, TierTable
from budgetops.engine.decisions import Release, admit_risk
from budgetops.engine.ledger import InvalidCharge
from budgetops.engine.reconcile import reconcile_risk
from budgetops.engine.verdicts import applied

from . import test_cli

run = test_cli.run
db = test_cli.db

NOW = datetime(2026, 3, 10, 9, 0, tzinfo=UTC)
CUSTOM = """\
defaultTier: 5
tiers:
  0: {name: Internal, allocation: 300}
  5: {name: Batch, allocation: 500}
"""


@pytest.fixture(autouse=True)
def built_in() -> Iterator[None]:
    """Each test starts and ends with the built-in table: the table is process-wide."""
    previous = tiers.use(BUILT_IN)
    yield
    tiers.use(previous)


def risk(**spec: Any) -> RiskBudget:
    return RiskBudget.model_validate(
        {
            "apiVersion": "budgetops.dev/v1alpha1",
            "kind": "RiskBudget",
            "metadata": {"name": "checkout", "namespace": "shop"},
            "spec": {"serviceId": "checkout", **spec},
        }
    )


def test_the_built_in_table_is_the_seeds() -> None:
    assert {n: (t.name, t.allocation) for n, t in BUILT_IN.tiers.items()} == {
        0: ("Internal", 300),
        1: ("Customer-Facing Non-Critical", 200),
        2: ("Customer-Facing Critical", 120),
        3: ("Safety-Critical", 80),
    }
    assert [risk(tier=n).spec.base_allocation() for n in range(4)] == [300, 200, 120, 80]
    assert risk().spec.base_allocation() == 200, "defaultTier 1 sizes a budget naming none"
    assert risk(tier=3, allocation=42).spec.base_allocation() == 42


@pytest.mark.parametrize(
    ("document", "error"),
    [
        ({"defaultTier": 4, "tiers": {0: {"name": "A", "allocation": 1}}}, "defaultTier 4 is"),
        ({"tiers": {}}, "at least 1 item"),
        ({"tiers": {100: {"name": "A", "allocation": 1}}}, "less than or equal to 99"),
        ({"tiers": {1: {"name": "A", "allocation": 0}}}, "greater than or equal to 1"),
        (
            {"tiers": {0: {"name": "A", "allocation": 1}, 1: {"name": "A", "allocation": 2}}},
            "tier names must differ: A",
        ),
        ({"tiers": {1: {"name": "A", "allocation": 1, "cost": 2}}}, "Extra inputs"),
    ],
)
def test_a_bad_table_is_refused_with_the_reason(document: dict[str, Any], error: str) -> None:
    with pytest.raises(ValidationError, match=error):
        TierTable.model_validate(document)


def test_a_file_is_read_as_yaml_and_its_errors_name_it(tmp_path: Path) -> None:
    path = tmp_path / "tiers.yaml"
    path.write_text(CUSTOM)
    table = load(path)
    assert (table.default_tier, table.tiers[5]) == (5, Tier(name="Batch", allocation=500))
    path.write_text("defaultTier: 2\ntiers:\n  0: {name: Internal, allocation: -1}\n")
    with pytest.raises(ValueError, match=rf"^tier table {path}: ") as raised:
        load(path)
    assert "defaultTier" in str(raised.value) or "allocation" in str(raised.value)
    path.write_text("tiers: [unclosed")
    with pytest.raises(ValueError, match="not YAML"):
        load(path)
    path.write_text("#" * (MAX_BYTES + 1))
    with pytest.raises(ValueError, match="longer than"):
        load(path)


def test_a_changed_file_applies_and_a_bad_change_keeps_the_table_in_force(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "tiers.yaml"
    path.write_text(CUSTOM)
    watched = TierFile(path)
    assert tiers.active().tiers[5].allocation == 500
    assert not watched.refresh(), "nothing changed"
    path.write_text(CUSTOM.replace("500", "650"))
    os.utime(path, ns=(1, 1))  # a different stamp, whatever the clock's resolution
    assert watched.refresh()
    assert risk(tier=5).spec.base_allocation() == 650
    path.write_text("defaultTier: 9\ntiers:\n  0: {name: Internal, allocation: 300}\n")
    with caplog.at_level(logging.ERROR, logger="budgetops.tiers"):
        assert not watched.refresh()
    assert "kept the tier table in force: tier table" in caplog.text
    assert risk(tier=5).spec.base_allocation() == 650
    path.unlink()
    assert not watched.refresh()
    assert risk(tier=5).spec.base_allocation() == 650


def test_a_tier_the_table_lacks_refuses_the_window_not_the_stored_budget() -> None:
    """A table may lose a tier after a budget naming it was stored: reading the budget still
    works, and the request that would open its next window is refused, changing nothing."""
    budget = risk(tier=3)
    tiers.use(TierTable(default_tier=None, tiers={0: Tier(name="Internal", allocation=300)}))
    stored = RiskBudget.model_validate(budget.to_wire())  # as a store reads it back
    before = stored.status.model_copy(deep=True)
    with pytest.raises(InvalidCharge, match=r"tier 3 is not in the tier table \(tiers 0\)"):
        admit_risk(
            stored.status,
            stored.spec,
            release=Release("v1", 5, "standard"),
            now=NOW,
            ttl=timedelta(minutes=5),
        )
    assert stored.status == before
    with pytest.raises(ValueError, match="set a tier or an explicit allocation"):
        risk().spec.base_allocation()


def test_the_verdict_config_follows_the_table() -> None:
    budget = risk(tier=5)
    tiers.use(TierTable.model_validate({"tiers": {5: {"name": "Batch", "allocation": 500}}}))
    config, first = applied(budget)
    assert config["allocation"] == 500
    tiers.use(TierTable.model_validate({"tiers": {5: {"name": "Batch", "allocation": 650}}}))
    config, second = applied(budget)
    assert (config["allocation"], second != first) == (650, True)


def test_a_manifest_naming_a_missing_tier_is_refused_at_apply(db: str, tmp_path: Path) -> None:
    document = risk(tier=5).to_wire()
    document.pop("status", None)
    with pytest.raises(ManifestError) as raised:
        parse_manifest(document, source="checkout.yaml")
    assert raised.value.errors == ["spec.tier: tier 5 is not in the tier table (tiers 0, 1, 2, 3)"]
    manifest = tmp_path / "checkout.yaml"
    manifest.write_text(
        "apiVersion: budgetops.dev/v1alpha1\nkind: RiskBudget\n"
        "metadata: {name: checkout, namespace: shop}\nspec: {serviceId: checkout, tier: 5}\n"
    )
    code, out = run("apply", "-f", str(manifest), "--db", db)
    assert (code, out) == (
        2,
        f"invalid: {manifest}: spec.tier: tier 5 is not in the tier table (tiers 0, 1, 2, 3)\n",
    )


def test_the_embedded_ledger_sizes_windows_by_the_table_it_is_given(
    db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    table = tmp_path / "tiers.yaml"
    table.write_text(CUSTOM)
    monkeypatch.setenv("BUDGETOPS_TIERS", str(table))
    manifest = tmp_path / "checkout.yaml"
    manifest.write_text(
        "apiVersion: budgetops.dev/v1alpha1\nkind: RiskBudget\n"
        "metadata: {name: checkout, namespace: shop}\nspec: {serviceId: checkout}\n"
    )
    assert run("apply", "-f", str(manifest), "--db", db)[0] == 0
    code, out = run("consume", "--service", "checkout", "--points", "50", "--db", db)
    assert code == 0, out
    code, out = run("status", "--service", "checkout", "--db", db)
    assert "Tier: Batch (5, the default)" in out
    assert "Budget: 50 / 500 RP (10.0%)" in out
    table.write_text("tiers: {0: {name: Internal, allocation: 0}}\n")
    code, out = run("status", "--service", "checkout", "--db", db)
    assert code == 2
    assert out.startswith(f"invalid: tier table {table}: tiers[0].allocation: ")


def test_a_budget_whose_window_cannot_be_sized_says_so_in_its_ready_condition() -> None:
    budget = risk(tier=5)
    outcome = reconcile_risk(
        budget.status, budget.spec, budget="rb", generation=1, now=NOW, seen=None
    )
    [ready] = budget.status.conditions
    assert (ready.type, ready.status, ready.reason) == ("Ready", "False", "WindowNotSized")
    assert ready.message == (
        "RiskBudget checkout cannot open a window: tier 5 is not in the tier table "
        "(tiers 0, 1, 2, 3)"
    )
    assert (outcome.changed, budget.status.window) == (True, None)
    tiers.use(TierTable.model_validate({"tiers": {5: {"name": "Batch", "allocation": 500}}}))
    reconcile_risk(budget.status, budget.spec, budget="rb", generation=1, now=NOW, seen=None)
    assert budget.status.allocation == 500
    assert [c.status for c in budget.status.conditions if c.type == "Ready"] == ["True"]


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        (
            b"a: &a [x, x, x, x, x, x, x, x, x]\nb: [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n",
            "aliases",
        ),
        (b"[" * 5000, "nested more than 64 levels"),
    ],
    ids=["aliases that would expand", "nesting past the stack"],
)
def test_a_table_that_would_blow_up_the_reader_is_refused_calmly(raw: bytes, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        parse(raw, where="tiers.yaml")
