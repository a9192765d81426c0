"""CustomResourceDefinitions generated from the models, so `crds/` can never drift from them.

Pydantic emits JSON Schema; the API server wants a *structural* OpenAPI v3 schema: no `$ref`,
no `anyOf` over types, no titles, every object typed. `structural` rewrites one into the other.
"""

from __future__ import annotations

from typing import Any

from budgetops.apis.common import GROUP, VERSION
from budgetops.apis.resources import RESOURCES, Kind, ResourceInfo

_DROPPED_KEYS = frozenset({"title", "default", "additionalProperties", "$defs", "readOnly"})


def _resolve(schema: dict[str, Any], definitions: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if ref is None:
        return schema
    target = definitions[ref.removeprefix("#/$defs/")]
    merged = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
    return _resolve(merged, definitions)


def _without_null(options: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [option for option in options if option.get("type") != "null"]


def structural(schema: dict[str, Any], definitions: dict[str, Any]) -> dict[str, Any]:
    """One JSON Schema node as a structural schema node (recursively)."""
    schema = _resolve(schema, definitions)
    if schema.get("x-kubernetes-int-or-string"):
        return {k: v for k, v in schema.items() if k not in _DROPPED_KEYS}
    if "anyOf" in schema:
        options = _without_null(schema["anyOf"])
        if len(options) != 1:
            raise ValueError(f"cannot express a union of {len(options)} types structurally")
        rest = {k: v for k, v in schema.items() if k != "anyOf"}
        return structural({**options[0], **rest}, definitions)
    node: dict[str, Any] = {}
    for key, value in schema.items():
        if key in _DROPPED_KEYS:
            continue
        if key == "properties":
            node[key] = {name: structural(sub, definitions) for name, sub in value.items()}
        elif key == "items":
            node[key] = structural(value, definitions)
        elif key == "const":
            node["enum"] = [value]
        else:
            node[key] = value
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        node["additionalProperties"] = structural(extra, definitions)
    if node.get("type") == "object" and "properties" not in node and not isinstance(extra, dict):
        node["x-kubernetes-preserve-unknown-fields"] = True
    if node.get("type") == "string" and node.get("format") == "date":
        node.pop("format")
        node["pattern"] = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"
    return node


def _schema_for(info: ResourceInfo) -> dict[str, Any]:
    raw = info.model.model_json_schema(by_alias=True, mode="validation")
    definitions = raw.get("$defs", {})
    properties = raw["properties"]
    spec = structural(properties["spec"], definitions)
    status = structural(properties["status"], definitions)
    spec.setdefault("description", f"Desired state of the {info.kind}.")
    status.setdefault("description", f"Observed state of the {info.kind}, written by BudgetOps.")
    # One writer owns status and replaces it whole, so per-field ownership tracking buys
    # nothing; with it, the API server spent ~1 ms of CPU per TrustBudget account on every
    # status write (docs/performance.md).
    status["x-kubernetes-map-type"] = "atomic"
    return {
        "type": "object",
        "description": info.description,
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": spec,
            "status": status,
        },
    }


def crd_for(kind: Kind) -> dict[str, Any]:
    """The CustomResourceDefinition object for one kind."""
    info = RESOURCES[kind]
    columns = [
        {
            "name": column.name,
            "type": column.type,
            "jsonPath": column.json_path,
            "description": column.description,
            **({"priority": column.priority} if column.priority else {}),
        }
        for column in info.columns
    ]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{info.plural}.{GROUP}",
            "labels": {"app.kubernetes.io/part-of": "budgetops"},
        },
        "spec": {
            "group": GROUP,
            "scope": info.scope,
            "names": {
                "kind": info.kind,
                "listKind": f"{info.kind}List",
                "plural": info.plural,
                "singular": info.kind.lower(),
                "shortNames": [info.short_name],
                "categories": ["budgets"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": columns,
                    "schema": {"openAPIV3Schema": _schema_for(info)},
                }
            ],
        },
    }


PEERING_GROUP = "kopf.dev"


def peering_crd() -> dict[str, Any]:
    """kopf's ClusterKopfPeering, where operator replicas agree which one reconciles.

    kopf reads and writes it but does not install it; it ships with our CRDs so that
    `kubectl apply -f crds/` (or the chart) is all an install needs.
    """
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"clusterkopfpeerings.{PEERING_GROUP}",
            "labels": {"app.kubernetes.io/part-of": "budgetops"},
        },
        "spec": {
            "group": PEERING_GROUP,
            "scope": "Cluster",
            "names": {
                "kind": "ClusterKopfPeering",
                "plural": "clusterkopfpeerings",
                "singular": "clusterkopfpeering",
            },
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "status": {
                                    "type": "object",
                                    "x-kubernetes-preserve-unknown-fields": True,
                                }
                            },
                        }
                    },
                }
            ],
        },
    }


def crd_documents() -> dict[str, dict[str, Any]]:
    """File name to CRD object, as committed in `crds/`: every kind, and kopf's peering."""
    documents = {f"{GROUP}_{RESOURCES[kind].plural}.yaml": crd_for(kind) for kind in RESOURCES}
    documents[f"{PEERING_GROUP}_clusterkopfpeerings.yaml"] = peering_crd()
    return documents
