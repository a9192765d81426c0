"""docs/crds/: the pages are what hack/crd_docs.py writes, and they name every field people write.

The schema is walked here on its own, not through the generator's walk, so a field the
generator skipped shows up as missing from its page. The pages that explain the fields
(concepts, operations) are held to their links, and the runbook to its alerts.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from budgetops.apis.crds import crd_for
from budgetops.apis.resources import RESOURCES, Kind
from tests.conftest import EXAMPLES, ROOT

GENERATOR = ROOT / "hack" / "crd_docs.py"
PAGES = ROOT / "docs" / "crds"
KINDS: list[Kind] = list(RESOURCES)


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("crd_docs", GENERATOR)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["crd_docs"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


crd_docs = _load()


def _schema(kind: Kind) -> dict[str, Any]:
    schema: dict[str, Any] = crd_for(kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def _page(kind: Kind) -> str:
    return (PAGES / f"{kind.lower()}.md").read_text(encoding="utf-8")


def _row(path: str) -> str:
    return f"| `{path}` |"


def _schema_paths(node: dict[str, Any], path: str) -> Iterator[str]:
    """Every field path below `node`: `.name` for properties, `[]` for items, `.*` for map
    values."""
    for name, child in node.get("properties", {}).items():
        yield f"{path}.{name}"
        yield from _schema_paths(child, f"{path}.{name}")
    if "items" in node:
        yield from _schema_paths(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from _schema_paths(node["additionalProperties"], f"{path}.*")


def _example_paths(value: object, node: dict[str, Any], path: str) -> Iterator[str]:
    """The field path of every key a manifest sets, read against the schema: a map's keys
    are data, not fields, and `metadata` is Kubernetes' own."""
    if isinstance(value, dict) and "properties" in node:
        for name, inner in value.items():
            assert name in node["properties"], f"{path}.{name} is not in the schema"
            yield f"{path}.{name}"
            yield from _example_paths(inner, node["properties"][name], f"{path}.{name}")
    elif isinstance(value, dict) and isinstance(node.get("additionalProperties"), dict):
        for inner in value.values():
            yield from _example_paths(inner, node["additionalProperties"], f"{path}.*")
    elif isinstance(value, list) and "items" in node:
        for inner in value:
            yield from _example_paths(inner, node["items"], f"{path}[]")


def _examples() -> list[tuple[str, int, dict[str, Any]]]:
    found = []
    for path in [*sorted(EXAMPLES.glob("*.yaml")), *sorted(EXAMPLES.glob("records/*.yaml"))]:
        for index, document in enumerate(yaml.safe_load_all(path.read_text(encoding="utf-8"))):
            if isinstance(document, dict) and document.get("kind") in RESOURCES:
                found.append((path.relative_to(EXAMPLES).as_posix(), index, document))
    return found


def test_committed_pages_are_what_the_generator_writes() -> None:
    """`python hack/crd_docs.py` rewrites them; a model change without it fails here."""
    committed = {p.name: p.read_text(encoding="utf-8") for p in PAGES.glob("*.md")}
    assert committed == crd_docs.pages()


def test_generating_twice_gives_the_same_pages() -> None:
    assert crd_docs.pages() == crd_docs.pages()


def test_check_passes_on_the_committed_pages() -> None:
    assert crd_docs.main(["--check"]) == 0


@pytest.mark.parametrize("damage", ["edited", "missing", "extra"])
def test_check_fails_when_the_folder_differs(
    damage: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, text in crd_docs.pages().items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    if damage == "edited":
        page = tmp_path / "riskbudget.md"
        page.write_text(page.read_text(encoding="utf-8").replace("Green", "Blue"))
    elif damage == "missing":
        (tmp_path / "budgetlease.md").unlink()
    else:
        (tmp_path / "oldkind.md").write_text("# OldKind\n", encoding="utf-8")
    monkeypatch.setattr(crd_docs, "PAGES", tmp_path)
    assert crd_docs.main(["--check"]) == 1


def test_writing_fills_an_empty_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(crd_docs, "PAGES", tmp_path / "crds")
    assert crd_docs.main([]) == 0
    assert crd_docs.main(["--check"]) == 0


def test_writing_removes_the_page_of_a_kind_that_is_gone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "oldkind.md").write_text("# OldKind\n", encoding="utf-8")
    monkeypatch.setattr(crd_docs, "PAGES", tmp_path)
    assert crd_docs.main([]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(crd_docs.pages())


@pytest.mark.parametrize("kind", KINDS)
def test_every_spec_and_status_field_is_on_its_page(kind: Kind) -> None:
    page = _page(kind)
    schema = _schema(kind)
    for top in ("spec", "status"):
        paths = list(_schema_paths(schema["properties"][top], top))
        assert paths
        missing = [p for p in paths if _row(p) not in page]
        assert missing == []


@pytest.mark.parametrize("kind", KINDS)
def test_every_cel_rule_and_message_is_on_its_page(kind: Kind) -> None:
    page = _page(kind)

    def rules(node: object) -> Iterator[dict[str, str]]:
        if isinstance(node, dict):
            yield from node.get("x-kubernetes-validations", [])
            for value in node.values():
                yield from rules(value)
        elif isinstance(node, list):
            for value in node:
                yield from rules(value)

    found = list(rules(_schema(kind)))
    assert found
    for rule in found:
        assert f"  {rule['rule']}\n" in page
        assert rule["message"] in page


@pytest.mark.parametrize("kind", KINDS)
def test_page_says_it_is_generated_and_shows_names_and_columns(kind: Kind) -> None:
    page = _page(kind)
    info = RESOURCES[kind]
    assert page.startswith("<!-- Generated by `python hack/crd_docs.py`")
    assert f"`{info.short_name}`" in page
    for column in info.columns:
        assert f"| {column.name} | {column.type} | `{column.json_path}` |" in page


@pytest.mark.parametrize(
    ("source", "index", "document"),
    _examples(),
    ids=[f"{name}#{index}" for name, index, _ in _examples()],
)
def test_every_example_field_is_on_the_page_of_its_kind(
    source: str, index: int, document: dict[str, Any]
) -> None:
    kind: Kind = document["kind"]
    page = _page(kind)
    assert f"](../examples/{source})" in page
    assert set(document) <= {"apiVersion", "kind", "metadata", "spec", "status"}
    schema = _schema(kind)
    paths = [
        path
        for top in ("spec", "status")
        if top in document
        for path in _example_paths(document[top], schema["properties"][top], top)
    ]
    assert paths
    missing = [p for p in paths if _row(p) not in page]
    assert missing == []


def test_the_pages_read_defaults_from_the_models() -> None:
    """The CRD schema carries no defaults; the pages take them from the models."""
    trust, risk, lease = _page("TrustBudget"), _page("RiskBudget"), _page("BudgetLease")
    assert "| `spec.breakGlass.rateLimit.count` | integer |  | required; min 1; max 100 |" in trust
    assert "| `spec.alerts.rapidDepletion.within` | string | `1h` |" in trust
    assert "| `spec.accountKey` | string | `user:${username}` |" in trust
    assert '| `spec.bands.red` | []string | `["low-risk", "security-fix", "incident"]` |' in risk
    assert "| `spec.ttl` | string | `1h` |" in lease


DOCS = ROOT / "docs"
LINK = re.compile(r"\]\(([^)#\s]+\.md)?(?:#([^)\s]+))?\)")


def _anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces as hyphens."""
    headings = re.findall(r"^#+ (.+)$", page.read_text(encoding="utf-8"), flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


@pytest.mark.parametrize(
    "name", ["concepts.md", "operations.md", *(f"crds/{k.lower()}.md" for k in KINDS)]
)
def test_links_lead_to_pages_and_headings_that_exist(name: str) -> None:
    page = DOCS / name
    for target, anchor in LINK.findall(page.read_text(encoding="utf-8")):
        linked = (page.parent / target).resolve() if target else page
        assert linked.is_file(), f"{name}: {target}"
        if anchor:
            assert anchor in _anchors(linked), f"{name}: {target}#{anchor}"


def test_the_runbook_has_a_section_per_alert() -> None:
    """The alert rules link `docs/operations.md#<alert in lower case>`."""
    rules = yaml.safe_load(
        (ROOT / "charts/budgetops/files/prometheus-rules.yaml").read_text(encoding="utf-8")
    )
    alerts = [r["alert"] for group in rules["groups"] for r in group["rules"] if "alert" in r]
    assert alerts
    anchors = _anchors(DOCS / "operations.md")
    assert [a for a in alerts if a.lower() not in anchors] == []
