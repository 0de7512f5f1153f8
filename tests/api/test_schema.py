"""The API against its own OpenAPI schema with schemathesis: no generated request gets a 5xx, and every
answer matches the schema (status code, content type, body)."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.specs.openapi.schemas import OpenApiSchema

from tests.api.conftest import AUTH

EXAMPLES = 15
CHECKS = [
    schemathesis.checks.not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture
def api_schema(api_factory: Callable[..., httpx.Client]) -> OpenApiSchema:
    api = api_factory(max_wait_s=0.5, read_deadline_s=1.0, follow_max_s=1.0)
    return schemathesis.openapi.from_url(str(api.base_url.join("/openapi.json")))


def test_api_conforms_to_its_schema(api_schema: OpenApiSchema) -> None:
    """Each operation gets `EXAMPLES` generated requests (schemathesis' pytest plugin does not run under
    this pytest, so hypothesis is driven directly, one operation at a time)."""
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 8
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def check(case: schemathesis.Case) -> None:
            case.call_and_validate(headers=AUTH, checks=CHECKS, timeout=10)

        check()
