"""BudgetLease objects in the API server: created, their status replaced, deleted."""

from __future__ import annotations

from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from budgetops.apis.common import GROUP, VERSION

PLURAL = "budgetleases"


class KubeLeaseObjects:
    """The operator is the only writer of these objects (its reconciler runs on one
    replica), so status is written with a merge patch rather than a compare-and-swap."""

    def __init__(self, api_client: client.ApiClient) -> None:
        self.api = client.CustomObjectsApi(api_client)

    def create(self, body: dict[str, Any]) -> bool:
        """False when it exists already (created by a previous run)."""
        meta = body["metadata"]
        try:
            self.api.create_namespaced_custom_object(
                GROUP, VERSION, meta["namespace"], PLURAL, body
            )
        except ApiException as error:
            if error.status == 409:
                return False
            raise
        return True

    def write_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        self.api.patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, PLURAL, name, {"status": status}
        )

    def delete(self, namespace: str, name: str) -> None:
        try:
            self.api.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        except ApiException as error:
            if error.status != 404:
                raise
