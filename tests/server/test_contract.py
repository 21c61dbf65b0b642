"""The server's API contract: `torchpredict serve` publishes an OpenAPI document (GET /openapi.json), and
schemathesis, reading it from a live server on 127.0.0.1, generates requests for every operation and checks the
answers: no 5xx, no status, content type or body the document does not declare."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import schemathesis
import schemathesis.checks as checks
from hypothesis import HealthCheck, given, settings

from live_server import AUTH, Server, start_server, stop

WINE = Path(__file__).parents[1] / "data" / "wine-v1" / "wine.tpk"
EXAMPLES = 25  # per operation
# No 5xx, no status, content type, headers or body the document does not declare, and requests the document calls
# invalid refused. Not positive_data_acceptance: a request valid by the document's schema (any tensors) is still
# refused when its columns are not the model's, which a schema of every model's columns cannot say.
CHECKS = [checks.not_a_server_error, checks.status_code_conformance, checks.content_type_conformance,
          checks.response_schema_conformance, checks.response_headers_conformance, checks.negative_data_rejection]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp("served")
    (folder / "wine.tpk").symlink_to(WINE)
    server = start_server(folder, tmp_path_factory.mktemp("logs") / "server.log", "--max-body-mb", "1")
    yield server
    stop(server)


def test_every_operation_keeps_to_the_document(server: Server):
    """Each operation in turn (schemathesis's pytest plugin cannot parametrize from a fixture under pytest 9), its
    cases generated from the document; every failure is said with its operation, not only the first."""
    api = schemathesis.openapi.from_url(f"http://{server.url}/openapi.json", headers=AUTH)
    failures, checked = [], []
    for result in api.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def keeps_to_it(case) -> None:
            case.call_and_validate(headers=AUTH, checks=CHECKS)

        try:
            keeps_to_it()
        except Exception as exc:  # said below, with the other operations' failures
            failures.append(f"{operation.label}: {str(exc)[:1500]}")
        checked.append(operation.label)
    assert len(checked) == 15, " | ".join(checked)  # every route but /openapi.json, which it was read from
    assert not failures, "\n\n".join(failures)


def test_the_document_names_the_served_models_and_every_status_the_server_answers(server: Server):
    reply = server.request("GET", "/openapi.json")
    assert reply.status == 200 and reply.headers["content-type"] == "application/json"
    document = orjson.loads(reply.body)
    infer = document["paths"]["/v2/models/{name}/infer"]
    assert infer["parameters"][0]["schema"]["enum"] == ["wine"]
    assert set(infer["post"]["responses"]) == {"200", "400", "401", "404", "405", "408", "413", "415", "500", "503",
                                                "504"}
    assert document["paths"]["/v2/health/live"]["get"]["security"] == []  # no token needed
    assert server.request("GET", "/openapi.json", auth=False).status == 401  # the document is behind the token
