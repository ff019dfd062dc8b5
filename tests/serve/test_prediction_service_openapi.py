"""A property-based run against the service's own OpenAPI document (schemathesis, in process: no network): no
generated request, valid or not, gets a 5xx; and the document declares every route and the bearer scheme."""

from __future__ import annotations

import json
import re

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from schemathesis.generation import GenerationMode
from schemathesis.checks import not_a_server_error

from medseg.serve.auth import TokenSet
from medseg.serve.prediction_app import create_app
from medseg.serve.served_models import load_models
from tests.serve.conftest import TOKEN, auth


@pytest.fixture(scope="module")
def service(random_model, tmp_path_factory):
    root = tmp_path_factory.mktemp("openapi_root")
    app = create_app(load_models([random_model]), tokens=TokenSet.single(TOKEN), allowed_roots=[root],
                     state=tmp_path_factory.mktemp("openapi_state"), max_queued=4, max_upload_bytes=2**20)
    yield app
    app.state.jobs.stop(timeout=30)


def test_the_openapi_document_matches_the_routes(service):
    document = TestClient(service).get("/openapi.json", headers=auth()).json()
    assert document["components"]["securitySchemes"]["HTTPBearer"] == {
        "type": "http", "scheme": "bearer", "description": "a token of the server's --tokens file"}
    routes = {(m.upper(), p) for p, ops in document["paths"].items() for m in ops}
    assert routes == {("POST", "/v1/jobs"), ("GET", "/v1/jobs/{job_id}"), ("GET", "/v1/jobs/{job_id}/result"),
                      ("GET", "/v1/models"), ("GET", "/healthz"), ("GET", "/readyz")}
    secured = {(m.upper(), p) for p, ops in document["paths"].items() for m, op in ops.items() if op.get("security")}
    assert secured == routes - {("GET", "/healthz"), ("GET", "/readyz")}
    body = document["paths"]["/v1/jobs"]["post"]["requestBody"]["content"]
    assert set(body) == {"multipart/form-data", "application/json"}
    references = set(re.findall(r'"\$ref": "#/components/schemas/([^"]+)"', json.dumps(document)))
    assert "JobRequest" in references and references <= set(document["components"]["schemas"])


@pytest.mark.slow
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_generated_request_gets_a_server_error(service, mode):
    # schemathesis' own pytest plugin (``from_fixture``) does not run under pytest 9, so each operation's
    # strategy is driven by hypothesis here: a bounded number of examples per operation, in process
    schema = schemathesis.openapi.from_asgi("/openapi.json", service, headers=auth())
    service.state.jobs.start()  # from_asgi's client ran the lifespan, which stopped the workers again
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 6
    if mode == GenerationMode.NEGATIVE:  # only operations that take input can be sent invalid input
        operations = [op for op in operations if op.method.upper() == "POST" or "{" in op.path]
        assert len(operations) == 3
    for operation in operations:
        media_types = ["multipart/form-data", "application/json"] if operation.method.upper() == "POST" else [None]
        for media_type in media_types:
            cases = operation.as_strategy(mode)  # (its media_type= does not choose the body; a filter does)
            if media_type is not None:
                cases = cases.filter(lambda case, wanted=media_type: case.media_type == wanted)

            @given(case=cases)
            @settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True,
                      database=None)
            def no_server_error(case):
                case.call_and_validate(headers=auth(), checks=[not_a_server_error])

            no_server_error()
