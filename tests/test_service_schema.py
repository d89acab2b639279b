"""Fuzzing the app against its own OpenAPI schema: no input, however malformed, gets a 5xx."""

from __future__ import annotations

from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings

from midmix.service.app import create_app
from midmix.service.settings import ServiceSettings
from tests.service_fixtures import write_fixture_mixture

pytestmark = pytest.mark.slow  # fuzzes every operation of the OpenAPI schema

# Generating nested mixture specs and curation configs is slow; they get fewer examples.
EXAMPLES = {"POST": 4}
DEFAULT_EXAMPLES = 10


def fuzz(operation: schemathesis.APIOperation, statuses: dict[str, set[int]]) -> None:
    """Call one operation with generated requests; every answer must be below 500."""

    @given(case=operation.as_strategy())
    @settings(
        max_examples=EXAMPLES.get(operation.method.upper(), DEFAULT_EXAMPLES),
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def call(case: schemathesis.Case) -> None:
        response = case.call()
        statuses.setdefault(operation.label, set()).add(response.status_code)
        assert response.status_code < 500, (case.method, case.formatted_path, case.body, response.text[:500])

    call()


def test_no_generated_request_gets_a_server_error(tmp_path: Path) -> None:
    write_fixture_mixture(tmp_path, "mix-00000000000000aa", rows=10)
    schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(ServiceSettings(data_dir=tmp_path)))
    statuses: dict[str, set[int]] = {}
    operations = [result.ok() for result in schema.get_all_operations()]
    for operation in operations:
        fuzz(operation, statuses)
    assert len(operations) >= 21 and set(statuses) == {operation.label for operation in operations}
    assert statuses["GET /health"] == {200}
