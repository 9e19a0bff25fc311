"""GET /v1/indicators/baseline over a real embedded store: baselines computed from the real school
year (simulators/data/SOURCES.md), one complete and one with 40 % of its days unread; savings only
beside a sufficient baseline, the reasons otherwise, and no meter of another org."""

from __future__ import annotations

import datetime as dt

import httpx
import numpy as np
import pytest

from analytics.energy.baseline import parse_temperature_csv
from analytics.energy.baseline_jobs import baseline_points
from analytics.energy.jobs import ArraySource, MeterInfo, compute_baselines
from analytics.periods import LocalCalendar
from api.app import create_app
from edge.point import Point
from tests.api.apienv import INST07, INST42, XIHU
from tests.energy.conftest import school_csv_path

FROM, TO = "2018-01-01T00:00:00+08:00", "2019-01-01T00:00:00+08:00"


def school_baselines() -> list[Point]:
    cal = LocalCalendar()
    text = school_csv_path().read_text()
    kwh = np.array([float(r.split(",")[1]) if r.split(",")[1] else np.nan for r in text.splitlines()[1:]])
    times = cal.midnight_ns(dt.date(2018, 1, 1)) + np.arange(1, kwh.size + 1, dtype=np.int64) * 3600 * 10**9
    counter = 50_000 + np.nancumsum(kwh)
    unread = np.isin(np.arange(kwh.size) // 24, 1 + np.random.default_rng(0).choice(363, 146, replace=False))
    ok = ~np.isnan(kwh)
    src = ArraySource({("m-hq-main", "active_energy_import_kwh"): (times[ok], counter[ok]),
                       ("m-b7", "active_energy_import_kwh"): (times[ok & ~unread], counter[ok & ~unread])})
    meters = [MeterInfo("m-hq-main", INST42), MeterInfo("m-b7", INST07)]
    temp_t, temp_c = parse_temperature_csv(text)
    report = compute_baselines(src, meters, (dt.date(2018, 1, 1), dt.date(2018, 12, 31)),
                               (dt.date(2018, 7, 1), dt.date(2018, 12, 31)), temp_t, temp_c, cal)
    pts = [p for p in baseline_points(report, meters, cal.midnight_ns(dt.date(2018, 7, 1)))
           if p.measurement == "energy_baseline"]
    # what the version before the sufficiency rules wrote: insufficient, yet with savings fields
    pts.append(Point("energy_baseline", {"meter": "m-hq-hvac", "org": INST42, "model_type": "hdd_only"},
                     {"sufficient": False, "r2": 0.5, "savings": 123.0, "savings_fraction": 0.1, "predicted": 1230.0,
                      "notes": "baseline has 200 usable days of 365"}, cal.midnight_ns(dt.date(2018, 7, 1))))
    return pts


@pytest.fixture(scope="module")
def points():
    return school_baselines()


async def test_savings_only_beside_a_sufficient_baseline(env, points):
    env.store.write_points(points)
    app = create_app(env.ctx)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        r = await c.get("/v1/indicators/baseline", params={"from": FROM, "to": TO})
        assert r.status_code == 200, r.text
        items = {it["meter"]: it for it in r.json()["items"]}
        assert set(items) == {"m-hq-main", "m-b7", "m-hq-hvac"}
        ok, gaps, old = items["m-hq-main"], items["m-b7"], items["m-hq-hvac"]
        assert ok["sufficient"] is True and ok["reasons"] == [] and ok["reporting_sufficient"] is True
        assert ok["savings"]["reporting_days"] > 150 and abs(ok["savings"]["savings_fraction"]) < 0.1
        assert ok["start"] == "2018-07-01T00:00:00.000+08:00" and ok["org"] == INST42
        assert "r2" in ok["model"] and "savings" not in ok["model"]
        assert gaps["sufficient"] is False and gaps["savings"] is None
        assert gaps["reasons"] == ["too_many_days_with_missing_data", "too_many_days_with_missing_meter_data"]
        assert any(n.startswith("too_many_days_with_missing_data: baseline: 2") for n in gaps["notes"])
        assert gaps["model"]["baseline_days"] < 0.65 * 365
        assert old["sufficient"] is False and old["savings"] is None and "savings" not in old["model"]
        one = (await c.get("/v1/indicators/baseline", params={"id": "m-b7", "from": FROM, "to": TO})).json()
        assert [it["meter"] for it in one["items"]] == ["m-b7"]
        assert (await c.get("/v1/indicators/baseline", params={"id": "nope"})).status_code == 404
        page = (await c.get("/v1/indicators/baseline", params={"from": FROM, "to": TO, "limit": 2})).json()
        assert len(page["items"]) == 2 and page["next_cursor"]


async def test_baselines_stay_within_the_keys_org(auth_env, points):
    auth_env.store.write_points(points)
    _, token = auth_env.keys.create(XIHU, "viewer")
    app = create_app(auth_env.ctx)
    h = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t", headers=h) as c:
        r = await c.get("/v1/indicators/baseline", params={"from": FROM, "to": TO})
        assert r.status_code == 200 and {it["meter"] for it in r.json()["items"]} == {"m-hq-main", "m-hq-hvac"}
        assert "m-b7" not in r.text and INST07 not in r.text
        assert (await c.get("/v1/indicators/baseline", params={"id": "m-b7"})).status_code in (403, 404)
        r = await c.get("/v1/indicators/baseline", params={"org": INST07, "from": FROM, "to": TO})
        assert r.status_code == 403
