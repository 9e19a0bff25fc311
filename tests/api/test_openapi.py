"""The OpenAPI document is accurate: schemathesis generates requests for every operation (bar the
endless live stream) and finds no server error, no undocumented status, content type or body.

Excluded: schemathesis' ``positive_data_acceptance`` (ST202), which expects every schema-valid
request to succeed. Some are valid by schema but not by meaning, and get a documented 400
problem: a cursor this API never gave out, or ``from`` after ``to``.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from api.app import create_app
from schemathesis.specs.openapi.checks import positive_data_acceptance
from tests.api.apienv import build_env

pytestmark = [
    # schemathesis drives ASGI apps through starlette's TestClient, which warns about its httpx use
    pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient` is deprecated"),
]


def test_api_conforms_to_its_openapi(tmp_path):
    env = build_env(tmp_path)
    app = create_app(env.ctx)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    failures: list[str] = []
    operations = [r.ok() for r in schema.get_all_operations()]
    operations = [op for op in operations if op.path != "/v1/live"]  # an endless stream
    assert len(operations) >= 30
    for op in operations:
        @given(case=op.as_strategy())
        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True,
                  database=None)
        def check(case):
            case.call_and_validate(excluded_checks=[positive_data_acceptance])

        try:
            check()
        except (Exception, BaseExceptionGroup) as e:  # collect all operations' failures, then report them together
            failures.append(f"{op.method.upper()} {op.path}: {type(e).__name__}: {str(e)[:1500]}")
    env.store.close()
    assert failures == [], "\n\n".join(failures)


def test_openapi_documents_problem_json(tmp_path):
    env = build_env(tmp_path, points=False)
    doc = create_app(env.ctx).openapi()
    op = doc["paths"]["/v1/meters/{meter_id}/latest"]["get"]
    assert "application/problem+json" in op["responses"]["404"]["content"]
    assert {"401", "403", "429"} <= set(op["responses"])
    assert "/v1/live" in doc["paths"] and "/v1/indicators/energy" in doc["paths"]
    env.store.close()
