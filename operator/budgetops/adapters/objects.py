"""Looking for admitted objects: the reconciler's witness check, one LIST per collection.

A reservation names the path of the object it was charged for. Paths are grouped by their
collection and each collection is listed once (narrowed by name when only one is wanted),
so a burst of 400 certificate requests costs one request, not 400, and it asks for metadata
only. A LIST that fails (refused, not served, an API server error, no connection) answers
UNREADABLE for its paths: the reconciler then knows it could not check, which is different
from "not there", and still does everything else (a window never waits on a witness).
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from budgetops.adapters.rest import request_json
from budgetops.engine.reconcile import UNREADABLE, Seen, Sighting, Unreadable

log = logging.getLogger("budgetops.objects")

METADATA_ONLY = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"
"""Only names, uids and generations are read: the API server need not send whole objects."""


class KubeObjects:
    """Reads objects by API path with the operator's credentials."""

    def __init__(self, api_client: client.ApiClient) -> None:
        self.api = api_client

    def look(self, paths: Iterable[str]) -> Seen:
        """What is at each path now: a Sighting, None when absent, or UNREADABLE."""
        wanted: defaultdict[str, set[str]] = defaultdict(set)
        for path in paths:
            collection, _, name = path.rpartition("/")
            wanted[collection].add(name)
        found: dict[str, Sighting | Unreadable | None] = {}
        for collection, names in wanted.items():
            items = self._list(collection, names)
            for name in names:
                found[f"{collection}/{name}"] = UNREADABLE if items is None else items.get(name)
        return found

    def _list(self, collection: str, names: set[str]) -> dict[str, Sighting] | None:
        query = [("fieldSelector", f"metadata.name={next(iter(names))}")] if len(names) == 1 else []
        try:
            _, data = request_json(self.api, "GET", collection, query=query, media=METADATA_ONLY)
        except (ApiException, HTTPError, OSError) as error:
            reason = f"HTTP {error.status}" if isinstance(error, ApiException) else str(error)
            log.warning("cannot list %s (%s): its reservations stay unchecked", collection, reason)
            return None
        document: dict[str, Any] = json.loads(data)
        sightings = {}
        for item in document.get("items") or []:
            meta = item.get("metadata") or {}
            sightings[str(meta.get("name"))] = Sighting(
                uid=str(meta.get("uid", "")), generation=int(meta.get("generation") or 0)
            )
        return sightings
