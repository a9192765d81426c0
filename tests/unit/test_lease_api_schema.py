"""The lease API against its own OpenAPI document, with schemathesis: every documented
operation is called with generated valid and invalid bodies on loopback, and each answer must
be one the document allows (status, headers, schema), never a 500, with bad input refused."""

from __future__ import annotations

import http.client
from pathlib import Path

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode

from budgetops.leaseapi.app import PREFIX
from tests.leases import create_agent, handshake, lease_api

EXAMPLES = 15
"""Generated cases per operation and mode: bounded, so the whole file runs in seconds."""


def test_the_lease_api_answers_as_its_document_says(tmp_path: Path) -> None:
    with lease_api(tmp_path) as api:
        _, token = create_agent(api.db)
        handshake(api, token)
        base_url = f"http://127.0.0.1:{api.port}/api/v1"
        schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
        headers = {"Authorization": f"Bearer {token}"}
        operations = [result.ok() for result in schema.get_all_operations()]
        assert len(operations) == 5
        for operation in operations:
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

                @given(case=operation.as_strategy(generation_mode=mode))
                @settings(
                    max_examples=EXAMPLES,
                    deadline=None,
                    suppress_health_check=list(HealthCheck),
                    database=None,
                    derandomize=True,
                )
                def check(case: schemathesis.Case) -> None:
                    # Always loopback, whatever `servers` the document may name one day.
                    case.call_and_validate(base_url=base_url, headers=headers)

                check()
        for path, methods in schema.raw_schema["paths"].items():
            wrong = "PUT" if "get" in methods else "GET"
            status, body, _ = api.call(wrong, path.replace("{lease_id}", "x"), token=token)
            assert (status, body["error"]["code"]) == (405, "METHOD_NOT_ALLOWED")
            allowed = call_headers(api.port, wrong, path.replace("{lease_id}", "x"))["Allow"]
            assert allowed == ", ".join(method.upper() for method in methods)


def call_headers(port: int, method: str, path: str) -> dict[str, str]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request(method, PREFIX + path)
        reply = connection.getresponse()
        reply.read()
        return dict(reply.getheaders())
    finally:
        connection.close()
