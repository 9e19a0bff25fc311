"""The OpenAPI document: problem+json errors, the routes, and the API keys as security schemes.
schemathesis runs every route against it in tests/api/test_schemathesis.py."""

from __future__ import annotations

from api.app import create_app
from tests.api.apienv import build_env


def test_openapi_documents_problem_json(tmp_path):
    env = build_env(tmp_path, points=False)
    doc = create_app(env.ctx).openapi()
    op = doc["paths"]["/v1/meters/{meter_id}/latest"]["get"]
    assert "application/problem+json" in op["responses"]["404"]["content"]
    assert {"401", "403", "429"} <= set(op["responses"])
    assert "/v1/live" in doc["paths"] and "/v1/indicators/energy" in doc["paths"]
    assert "securitySchemes" not in doc.get("components", {})  # auth off: no key to declare
    env.store.close()


def test_openapi_declares_the_keys_when_auth_is_on(auth_env):
    doc = create_app(auth_env.ctx).openapi()
    assert set(doc["components"]["securitySchemes"]) == {"bearer", "apiKey"}
    assert doc["paths"]["/v1/meters"]["get"]["security"] == [{"bearer": []}, {"apiKey": []}]
    assert doc["paths"]["/metrics"]["get"]["security"] == [{"bearer": []}, {"apiKey": []}]
    assert doc["paths"]["/v1/health"]["get"]["security"] == []
    assert "to" in {p["name"] for p in doc["paths"]["/v1/trips"]["get"]["parameters"]}
