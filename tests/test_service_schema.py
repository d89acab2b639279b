"""Fuzzing a real ``midmix serve`` against its own OpenAPI schema: no request, however malformed, gets a 5xx.

Every operation gets schema-valid and schema-violating requests (path ids, query bounds, bodies,
headers) with a write token, so they reach the routes rather than stopping at auth; then a
stateful run follows the schema's links (a created job -> get, cancel, retry it; the mixture list
-> a manifest). The service has an input root and a fixture mixture, so valid ids exist.
"""

from __future__ import annotations

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.generation import GenerationMode

from tests.service_fixtures import start_service, write_fixture_mixture

pytestmark = pytest.mark.slow  # fuzzes every operation of the OpenAPI schema through a real server

TOKEN = "fuzz-write-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
# Per operation and generation mode. Nested curation and mixture bodies are slow to generate.
EXAMPLES = {"POST": 6}
DEFAULT_EXAMPLES = 15
_SETTINGS = dict(deadline=None, database=None, suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("fuzz")
    write_fixture_mixture(root / "data", "mix-00000000000000aa", rows=10)
    (root / "inputs").mkdir()
    (root / "inputs" / "corpus.jsonl").write_text('{"text": "a document"}\n')
    config = {"write_tokens": [TOKEN], "read_tokens": ["fuzz-read-token"], "input_roots": [str(root / "inputs")]}
    service = start_service(root / "data", config=config)
    yield service
    service.stop()


SESSION = requests.Session()  # one connection pool for all calls


def fuzz(operation, mode: GenerationMode, statuses: dict[str, set[int]]) -> None:
    """Call one operation with generated requests; every answer must be below 500."""

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES.get(operation.method.upper(), DEFAULT_EXAMPLES),
        phases=[Phase.explicit, Phase.generate],
        **_SETTINGS,
    )
    def call(case) -> None:
        case.headers = {**(case.headers or {}), **AUTH}  # past auth (test_service_auth covers it), into the routes
        response = case.call(session=SESSION)
        statuses.setdefault(operation.label, set()).add(response.status_code)
        assert response.status_code < 500, (case.method, case.formatted_path, case.body, response.text[:500])

    try:
        call()
    except Unsatisfiable:
        assert mode is GenerationMode.NEGATIVE  # an operation without parameters has no invalid request


def test_no_generated_request_gets_a_server_error(served) -> None:
    schema = schemathesis.openapi.from_url(f"{served.url}/openapi.json")
    statuses: dict[str, set[int]] = {}
    operations = [result.ok() for result in schema.get_all_operations()]
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            fuzz(operation, mode, statuses)
    assert len(operations) >= 18 and set(statuses) == {operation.label for operation in operations}
    assert statuses["GET /health"] == {200}
    assert 422 in statuses["GET /jobs/{job_id}"]  # malformed ids are refused at the edge
    assert all(status < 500 for seen in statuses.values() for status in seen)


def test_stateful_runs_along_the_schema_links_get_no_server_error(served) -> None:
    schema = schemathesis.openapi.from_url(f"{served.url}/openapi.json")
    linked = {link for item in httpx.get(f"{served.url}/openapi.json").json()["paths"].values()
              for operation in item.values() for answer in operation.get("responses", {}).values()
              for link in answer.get("links", {})}  # fmt: skip
    assert {"GetJob", "CancelJob", "RetryJob", "Manifest"} <= linked
    seen: list[tuple[str, int]] = []

    class Machine(schema.as_state_machine()):
        def before_call(self, case) -> None:
            case.headers = {**(case.headers or {}), **AUTH}

        def get_call_kwargs(self, case):
            return {"session": SESSION}

        def validate_response(self, response, case, **kwargs) -> None:
            seen.append((f"{case.method} {case.path}", response.status_code))
            assert response.status_code < 500, (case.method, case.formatted_path, case.body, response.text[:500])

    Machine.run(settings=settings(max_examples=25, stateful_step_count=6, **_SETTINGS))
    followed = {operation for operation, status in seen if status < 400}
    assert len(seen) >= 50
    assert {"GET /jobs/{job_id}", "DELETE /jobs/{job_id}"} <= followed, "the links never reached a real job"
