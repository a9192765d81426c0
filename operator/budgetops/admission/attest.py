"""Signed verdicts at admission: the subject of a request. The envelope of a decision is
signed and recorded by `usecases.attest.Attestor`, inside the charge."""

from __future__ import annotations

from typing import Any

from budgetops.admission.classify import WORKLOADS
from budgetops.admission.review import AdmissionRequest
from budgetops.engine.verdicts import Subject, content_digest

IMAGES_KEPT = 32
"""Images named in a verdict at most (a pod runs a handful)."""
IMAGE_MAX = 512
"""Characters of an image reference a verdict keeps."""


def images_of(
    template: Any, *, kept: int | None = IMAGES_KEPT, cut: int | None = IMAGE_MAX
) -> tuple[str, ...]:
    """The distinct images of a pod template, init containers first: at most `kept`, each
    cut to `cut` characters (None: all of them, as written)."""
    spec = template.get("spec") if isinstance(template, dict) else None
    if not isinstance(spec, dict):
        return ()
    found: list[str] = []
    for field in ("initContainers", "containers"):
        containers = spec.get(field)
        for container in containers if isinstance(containers, list) else []:
            image = container.get("image") if isinstance(container, dict) else None
            if isinstance(image, str) and image:
                image = image[:cut]
                if image not in found:
                    found.append(image)
    return tuple(found[:kept])


def subject_of(request: AdmissionRequest, release_key: str = "") -> Subject:
    """The object as admitted: a workload by its pod template (which is what a release
    changes), anything else by its spec."""
    gvr = request.resource
    path = WORKLOADS.get((gvr.group, gvr.resource))
    node: Any = request.object or {}
    for part in path or ("spec",):
        node = node.get(part) if isinstance(node, dict) else None
    meta = request.metadata()
    name = request.name or meta.get("name") or meta.get("generateName") or ""
    return Subject(
        kind=request.kind.kind,
        resource=f"{gvr.group}/{gvr.resource}" if gvr.group else gvr.resource,
        namespace=request.namespace,
        name=str(name),
        uid=request.object_uid(),
        digest=content_digest(node),
        release_id=release_key.removeprefix("release:")
        if release_key.startswith("release:")
        else "",
        images=images_of(node) if path else (),
    )
