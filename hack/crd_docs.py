#!/usr/bin/env python3
"""Reference pages for the CRDs, generated from the schema the models produce.

The pages in docs/crds/ describe what the API server checks, so they are written from the
same `openAPIV3Schema` that `budgetops crds` puts in `crds/` (`apis.crds.crd_for`), never
by hand. That schema carries no defaults (`apis.crds.structural` drops them), so defaults
are read from the models themselves.

    python hack/crd_docs.py            # write docs/crds/<kind>.md
    python hack/crd_docs.py --check    # exit 1 when a committed page differs
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, TypeAdapter
from pydantic.alias_generators import to_camel

from budgetops.apis.common import API_VERSION
from budgetops.apis.crds import crd_for
from budgetops.apis.resources import RESOURCES, Kind

ROOT = Path(__file__).resolve().parent.parent
PAGES = ROOT / "docs" / "crds"
EXAMPLES = ROOT / "docs" / "examples"
COMMAND = "python hack/crd_docs.py"

_LIMITS = (
    ("minimum", "min"),
    ("maximum", "max"),
    ("minLength", "min length"),
    ("maxLength", "max length"),
    ("minItems", "min items"),
    ("maxItems", "max items"),
    ("minProperties", "min entries"),
    ("maxProperties", "max entries"),
)


@dataclass(frozen=True)
class Field:
    """One row of a page: a field path and what the schema and the model say about it."""

    path: str
    type: str
    default: str
    constraints: tuple[str, ...]
    description: str


@dataclass(frozen=True)
class Rule:
    """A CEL rule (`x-kubernetes-validations`) and the message the API server answers with."""

    path: str
    rule: str
    message: str


Defaults = dict[str, tuple[Any, type[Any] | None]]
"""A model's fields by wire name: the default as written on the wire (None when there is
none), and the model or dataclass the field holds, if any."""


def _model_in(annotation: object) -> type[Any] | None:
    """The model or dataclass an annotation holds (`list[Entry]` holds Entry), if any."""
    if isinstance(annotation, type):
        if issubclass(annotation, BaseModel) or dataclasses.is_dataclass(annotation):
            return annotation
        return None
    for argument in typing.get_args(annotation):
        found = _model_in(argument)
        if found is not None:
            return found
    return None


def _wire(annotation: Any, value: object) -> Any:
    """A default as the API server would store it (`24h`, `"1"`), or None for no default."""
    if value is None:
        return None
    return TypeAdapter[Any](annotation).dump_python(value, mode="json", by_alias=True)


def defaults_of(model: type[Any] | None) -> Defaults:
    """Each field's default and inner model, for pydantic models and the ledger's dataclasses."""
    if model is None:
        return {}
    found: Defaults = {}
    if issubclass(model, BaseModel):
        for name, info in model.model_fields.items():
            annotation = info.rebuild_annotation()
            value = None if info.is_required() else info.get_default(call_default_factory=True)
            found[info.alias or name] = (_wire(annotation, value), _model_in(annotation))
        return found
    hints = typing.get_type_hints(model, include_extras=True)
    for item in dataclasses.fields(model):
        if item.default is not dataclasses.MISSING:
            default: object = item.default
        elif item.default_factory is not dataclasses.MISSING:
            default = item.default_factory()
        else:
            default = None
        annotation = hints[item.name]
        found[to_camel(item.name)] = (_wire(annotation, default), _model_in(annotation))
    return found


def type_of(node: dict[str, Any]) -> str:
    """The field's type as `kubectl explain` would name it."""
    if node.get("x-kubernetes-int-or-string"):
        return "int-or-string"
    kind = node.get("type", "")
    if kind == "array":
        return "[]" + type_of(node["items"])
    if kind == "object":
        extra = node.get("additionalProperties")
        if isinstance(extra, dict):
            return f"map[string]{type_of(extra)}"
        if "properties" not in node:
            return "object (free-form)"
        return "object"
    if kind == "string" and "format" in node:
        return f"string ({node['format']})"
    return str(kind)


def _code(value: object) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return f"`{text}`" if text else '`""`'


def constraints_of(node: dict[str, Any], *, required: bool) -> tuple[str, ...]:
    """Required, bounds, pattern, enum and CEL messages; an array's or map's items too."""
    found = ["required"] if required else []
    if "enum" in node:
        found.append("one of " + ", ".join(_code(v) for v in node["enum"]))
    found += [f"{label} {node[key]}" for key, label in _LIMITS if key in node]
    if "pattern" in node:
        found.append(f"pattern {_code(node['pattern'])}")
    found += [f"rule: {r['message']}" for r in node.get("x-kubernetes-validations", [])]
    if node.get("x-kubernetes-map-type") == "atomic":
        found.append("replaced whole (atomic)")
    for key, label in (("items", "each item"), ("additionalProperties", "each value")):
        inner = node.get(key)
        if isinstance(inner, dict) and "properties" not in inner:
            limits = constraints_of(inner, required=False)
            found += [f"{label}: {', '.join(limits)}"] if limits else []
    return tuple(found)


def _describe(node: dict[str, Any]) -> str:
    return " ".join(str(node.get("description", "")).split())


def walk(
    node: dict[str, Any], path: str, *, required: bool, defaults: tuple[Any, type[Any] | None]
) -> Iterator[Field | Rule]:
    """Every field at and below `path`, depth first in the models' order, and its rules."""
    default, model = defaults
    nested = "properties" in node
    shown = "" if default is None or nested else _code(default)
    yield Field(
        path, type_of(node), shown, constraints_of(node, required=required), _describe(node)
    )
    for rule in node.get("x-kubernetes-validations", []):
        yield Rule(path, rule["rule"], rule["message"])
    inner: dict[str, Any] = node
    while inner.get("type") == "array" or isinstance(inner.get("additionalProperties"), dict):
        if inner.get("type") == "array":
            inner, path = inner["items"], f"{path}[]"
        else:
            inner, path = inner["additionalProperties"], f"{path}.*"
        for rule in inner.get("x-kubernetes-validations", []):
            yield Rule(path, rule["rule"], rule["message"])
    fields = defaults_of(model)
    needed = set(inner.get("required", []))
    for name, child in inner.get("properties", {}).items():
        yield from walk(
            child,
            f"{path}.{name}",
            required=name in needed,
            defaults=fields.get(name, (None, None)),
        )


def fields_of(kind: Kind) -> tuple[list[Field], list[Rule]]:
    """The spec and status fields of one kind, and its CEL rules, from its generated CRD."""
    version = crd_for(kind)["spec"]["versions"][0]
    schema = version["schema"]["openAPIV3Schema"]
    model = RESOURCES[kind].model
    fields: list[Field] = []
    rules: list[Rule] = []
    for top in ("spec", "status"):
        node = schema["properties"][top]
        inner = _model_in(model.model_fields[top].rebuild_annotation())
        for item in walk(node, top, required=top in schema["required"], defaults=(None, inner)):
            if isinstance(item, Field):
                fields.append(item)
            else:
                rules.append(item)
    return fields, rules


def examples_of(kind: Kind) -> list[Path]:
    """The example manifests (not the invalid ones) that hold an object of this kind: those
    to apply, and in records/ the objects only BudgetOps writes."""
    return [
        path
        for path in [*sorted(EXAMPLES.glob("*.yaml")), *sorted(EXAMPLES.glob("records/*.yaml"))]
        if any(
            isinstance(doc, dict) and doc.get("kind") == kind
            for doc in yaml.safe_load_all(path.read_text(encoding="utf-8"))
        )
    ]


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _table(fields: list[Field], top: str) -> list[str]:
    lines = [
        "| field | type | default | constraints | description |",
        "|---|---|---|---|---|",
    ]
    for f in fields:
        if f.path.startswith(f"{top}.") or f.path.startswith(f"{top}["):
            cells = (f"`{f.path}`", f.type, f.default, "; ".join(f.constraints), f.description)
            lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return lines


def page(kind: Kind) -> str:
    """The Markdown page of one kind."""
    info = RESOURCES[kind]
    crd = crd_for(kind)
    names = crd["spec"]["names"]
    version = crd["spec"]["versions"][0]
    fields, rules = fields_of(kind)
    tops = {f.path: f for f in fields if f.path in ("spec", "status")}
    examples = (
        ", ".join(
            f"[`{p.name}`](../examples/{p.relative_to(EXAMPLES).as_posix()})"
            for p in examples_of(kind)
        )
        or "none yet"
    )
    lines = [
        f"<!-- Generated by `{COMMAND}`; do not edit. -->",
        f"# {kind}",
        "",
        f"Generated by `{COMMAND}` from the CRD that `budgetops crds` builds out of the models",
        "in `operator/budgetops/apis/`. Do not edit it: change the models and run the command",
        "again (`--check` fails while this page is out of date).",
        "",
        f"{info.description} What its fields are for: [concepts](../concepts.md).",
        "",
        "| | |",
        "|---|---|",
        f"| apiVersion | `{API_VERSION}` |",
        f"| scope | {crd['spec']['scope']} |",
        f"| plural, singular | `{names['plural']}`, `{names['singular']}` |",
        f"| short names | {', '.join(f'`{n}`' for n in names['shortNames'])} |",
        f"| categories | {', '.join(f'`{n}`' for n in names['categories'])} |",
        f"| subresources | {', '.join(f'`{n}`' for n in version['subresources'])} |",
        f"| example | {examples} |",
        "",
        "`metadata` is the standard Kubernetes object metadata. BudgetOps checks a few things",
        "the schema cannot say (see `docs/examples/invalid/`): run `budgetops validate -f FILE`",
        "before `kubectl apply`.",
        "",
        "## Printer columns",
        "",
        "What `kubectl get` shows; columns of priority 1 only with `-o wide`.",
        "",
        "| column | type | JSONPath | priority | description |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {c['name']} | {c['type']} | `{c['jsonPath']}` | {c.get('priority', 0)} "
        f"| {_cell(c['description'])} |"
        for c in version["additionalPrinterColumns"]
    ]
    for top in ("spec", "status"):
        head = tops[top]
        lines += ["", f"## {top}", "", head.description]
        if head.constraints:
            lines += ["", f"`{top}`: {'; '.join(head.constraints)}."]
        lines += ["", *_table(fields, top)]
    lines += ["", "## Validation rules", ""]
    lines.append("CEL rules the API server evaluates (`x-kubernetes-validations`), and the")
    lines.append("message it answers with when one does not hold.")
    for r in rules:
        lines += ["", f"- `{r.path}`: {r.message}", "", "  ```cel", f"  {r.rule}", "  ```"]
    return "\n".join(lines) + "\n"


def pages() -> dict[str, str]:
    """File name in docs/crds/ to its text, for every kind."""
    return {f"{kind.lower()}.md": page(kind) for kind in RESOURCES}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="exit 1 if docs/crds/ is stale")
    args = parser.parse_args(argv)
    wanted = pages()
    if args.check:
        present = {p.name: p.read_text(encoding="utf-8") for p in PAGES.glob("*.md")}
        stale = sorted(n for n in wanted.keys() | present.keys() if wanted.get(n) != present.get(n))
        for name in stale:
            print(f"docs/crds/{name} is not what `{COMMAND}` writes; run it", file=sys.stderr)
        return 1 if stale else 0
    PAGES.mkdir(parents=True, exist_ok=True)
    for stale_page in PAGES.glob("*.md"):
        if stale_page.name not in wanted:
            stale_page.unlink()  # a kind that no longer exists
    for name, text in wanted.items():
        (PAGES / name).write_text(text, encoding="utf-8")
    print(f"wrote {len(wanted)} pages to docs/crds")
    return 0


if __name__ == "__main__":
    sys.exit(main())
