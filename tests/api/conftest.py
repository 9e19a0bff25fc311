"""API test fixtures; the builders live in tests/api/apienv.py."""

from __future__ import annotations

import pytest

from tests.api.apienv import build_env
from tests.support.influx import influx_server  # noqa: F401  (fixture: the upstream kill -9 test)


@pytest.fixture
def env(tmp_path):
    e = build_env(tmp_path)
    yield e
    e.store.close()


@pytest.fixture
def auth_env(tmp_path):
    e = build_env(tmp_path, auth=True)
    yield e
    e.store.close()
    e.keys.close()
