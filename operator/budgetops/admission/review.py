"""AdmissionReview `admission.k8s.io/v1`: the parts BudgetOps reads, and the response it sends.

The API server sends more than this; unknown fields are ignored here (unlike in budget
manifests) because the API server, not a person, writes them.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from budgetops.apis.ledger import Witness

ADMISSION_API_VERSION = "admission.k8s.io/v1"
SERVICE_ACCOUNT_PREFIX = "system:serviceaccount:"
MAX_UID = 253
"""Longest request uid echoed in a denial (the API server's are 36 characters)."""


class _Wire(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


class UserInfo(_Wire):
    """Who is asking, as the API server authenticated them."""

    username: str = ""
    uid: str = ""
    groups: list[str] = Field(default_factory=list)

    def service_account(self) -> tuple[str, str] | None:
        """(namespace, name) when the requester is a service account."""
        if not self.username.startswith(SERVICE_ACCOUNT_PREFIX):
            return None
        namespace, _, name = self.username.removeprefix(SERVICE_ACCOUNT_PREFIX).partition(":")
        return (namespace, name) if namespace and name else None


class GroupVersionResource(_Wire):
    group: str = ""
    version: str = ""
    resource: str


class GroupVersionKind(_Wire):
    group: str = ""
    version: str = ""
    kind: str


class AdmissionRequest(_Wire):
    """One admission call: what is done to which object by whom."""

    uid: str = Field(min_length=1)
    kind: GroupVersionKind
    resource: GroupVersionResource
    sub_resource: str = ""
    name: str = ""
    namespace: str = ""
    operation: Literal["CREATE", "UPDATE", "DELETE", "CONNECT"]
    user_info: UserInfo
    object: dict[str, Any] | None = None
    old_object: dict[str, Any] | None = None
    dry_run: bool = False

    def metadata(self) -> dict[str, Any]:
        meta = (self.object or {}).get("metadata")
        return meta if isinstance(meta, dict) else {}

    def annotations(self) -> dict[str, str]:
        found = self.metadata().get("annotations")
        return {str(k): str(v) for k, v in found.items()} if isinstance(found, dict) else {}

    def labels(self) -> dict[str, str]:
        found = self.metadata().get("labels")
        return {str(k): str(v) for k, v in found.items()} if isinstance(found, dict) else {}

    def object_uid(self) -> str:
        """The object's uid (set before validating admission on CREATE), else the request's."""
        uid = self.metadata().get("uid")
        return uid if isinstance(uid, str) and uid else self.uid

    def witness(self) -> Witness | None:
        """Where the reconciler will find the admitted object, and what it must carry.

        None for what never becomes an object of its own (a subresource such as a token
        request) or what has no name or uid to look for.
        """
        meta = self.metadata()
        name = self.name or meta.get("name")
        uid = meta.get("uid")
        if self.sub_resource or not isinstance(name, str) or not name or not isinstance(uid, str):
            return None
        gvr = self.resource
        root = f"/apis/{gvr.group}/{gvr.version}" if gvr.group else f"/api/{gvr.version}"
        where = f"/namespaces/{self.namespace}" if self.namespace else ""
        generation = meta.get("generation")
        return Witness(
            path=f"{root}{where}/{gvr.resource}/{name}",
            uid=uid,
            generation=generation if isinstance(generation, int) and generation > 0 else 0,
            created=self.operation == "CREATE",
        )

    def describe(self) -> str:
        """`CertificateSigningRequest/alice-1` or `Deployment payments/api`."""
        name = self.name or self.metadata().get("name") or self.metadata().get("generateName", "")
        where = f" {self.namespace}/" if self.namespace else "/"
        return f"{self.kind.kind}{where}{name}"


class AdmissionReview(_Wire):
    """The envelope; only v1 is served."""

    api_version: Literal["admission.k8s.io/v1"]
    kind: Literal["AdmissionReview"]
    request: AdmissionRequest


def request_uid(document: object) -> str:
    """The request uid of what may be an AdmissionReview, or "": what a review that cannot
    be read is denied by (the API server takes any status but 200 for a failed webhook)."""
    request = document.get("request") if isinstance(document, dict) else None
    uid = request.get("uid") if isinstance(request, dict) else None
    return uid if isinstance(uid, str) and 0 < len(uid) <= MAX_UID else ""


def response(
    uid: str,
    *,
    allowed: bool,
    message: str = "",
    code: int = 403,
    warnings: list[str] | None = None,
) -> dict[str, Any]:
    """The AdmissionReview the API server expects back."""
    body: dict[str, Any] = {"uid": uid, "allowed": allowed}
    if not allowed:
        reason = {400: "BadRequest", 403: "Forbidden", 503: "ServiceUnavailable"}[code]
        body["status"] = {"code": code, "reason": reason, "message": message}
    if warnings:
        body["warnings"] = warnings
    return {"apiVersion": ADMISSION_API_VERSION, "kind": "AdmissionReview", "response": body}
