"""Every route under schemathesis, all checks, with auth on and an admin key of the root org
(and once more with auth off, as the local demo runs).

The app is the one a site runs with ``api.auth: true``: a real embedded store with two hours of
readings, positions, trips, indicators and alerts, an outbox with a dead letter, an ingest for
alert acknowledgements and audit points. schemathesis generates requests for every operation of
the OpenAPI document (valid and invalid ones), sends them with the admin key, and runs every
check it has (``--checks all``): no server error; status codes, content types, headers and bodies
as documented; invalid data refused; valid data accepted; and ``ignored_auth``, which sends each
request again without a key and with a wrong one and expects 401.

One setting differs from schemathesis' defaults: ``positive_data_acceptance`` also accepts a 400.
Some requests are valid by the schema and not by meaning, and get a documented 400 problem: a
cursor this API never gave out, ``from`` after ``to``, an ``every=`` longer than 366 days.

The live stream is included: its ``max_s`` is cut to a few milliseconds so that it ends.

The run must not lock the site out (one run did, before the fix): the revocation route runs first,
every example of it aimed at the run's own key, the root org's only admin key; each must be refused
(409), and the key must still be active at the end.
"""

from __future__ import annotations

import asyncio

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.config import SchemathesisConfig
from schemathesis.core.failures import FailureGroup

from api.app import create_app
from api.keys import KeyStore
from edge.live import LiveState
from edge.outbox import Outbox
from edge.app.service import ServiceIngest
from tests.api.apienv import build_env

pytestmark = [
    pytest.mark.slow,
    # schemathesis drives ASGI apps through starlette's TestClient, which warns about its httpx use
    pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient` is deprecated"),
]

EXAMPLES = 50  # per operation; 34 operations
REVOKE = "DELETE /v1/keys/{key_id}"


def exercise(op, headers: dict[str, str], own_key_id: str) -> None:
    """Every check on ``EXAMPLES`` generated requests of one operation (hypothesis raises what fails)."""
    @given(case=op.as_strategy())
    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True,
              database=None)
    def check(case):
        if op.path == "/v1/live":
            case.query = {**(case.query or {}), "max_s": 0.005}  # the stream ends instead of running 300 s
        if op.label == REVOKE:
            case.path_parameters = {"key_id": own_key_id}
        case.call_and_validate(headers=headers)

    check()


@pytest.mark.parametrize("auth", [True, False], ids=["auth", "no-auth"])
def test_every_route_passes_all_checks_with_an_admin_key(tmp_path, auth):
    env = build_env(tmp_path, auth=auth)
    outbox = Outbox(tmp_path / "outbox.sqlite")
    ingest = ServiceIngest(outbox, LiveState())
    asyncio.run(ingest.reject("gps", b"\x00garbage", "bad_json", topic="vehicles/v1/position"))
    env.ctx.extras.update(ingest=ingest, outbox=outbox)
    keys = env.keys or KeyStore(tmp_path / "unused-keys.sqlite")  # with auth off the key is sent and ignored
    admin, token = keys.create("330000", "admin", "schemathesis")
    app = create_app(env.ctx)
    config = SchemathesisConfig.from_dict({"checks": {"positive_data_acceptance": {
        "expected-statuses": ["2xx", "3xx", "400", "401", "403", "404", "409", "429"]}}})
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, config=config)
    headers = {"Authorization": f"Bearer {token}"}
    operations = [r.ok() for r in schema.get_all_operations()]
    assert len(operations) >= 34
    # revoking keys first, aimed at the run's own key, while it is the root org's only admin key
    operations.sort(key=lambda op: op.label != REVOKE)
    failures: list[str] = []
    for op in operations:
        try:
            exercise(op, headers, admin.id)
        except (AssertionError, FailureGroup, BaseExceptionGroup) as e:  # report every operation's failures together
            failures.append(f"{op.method.upper()} {op.path}: {type(e).__name__}: {str(e)[:2000]}")
    assert keys.get(admin.id).active
    asyncio.run(app.state.guard.audit.drain())  # the last aggregated counts, before the files close
    outbox.close()
    env.store.close()
    keys.close()
    assert failures == [], "\n\n".join(failures)
