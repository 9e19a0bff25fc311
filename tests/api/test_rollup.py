"""GET /v1/rollup: a district's institutions side by side, ranked, each a link down; scoped like every route;
answers kept only while the store has not changed them."""

from __future__ import annotations

import datetime as dt

import httpx
import pytest
from argon2 import PasswordHasher

from api.app import create_app
from api.context import ApiContext
from api.keys import KeyStore
from edge.config import Api, Building, Meter, Org, Site, SiteInfo, Transport, Vehicle
from edge.live import LiveState
from edge.point import Point
from edge.query import StoreQuery
from edge.store import EmbeddedStore

NS = 1_000_000_000
XIHU = "330000/330100/330106"
INST42 = f"{XIHU}/inst-042"
STREET = f"{XIHU}/330106004"
INST101 = f"{STREET}/inst-101"
GONGSHU = "330000/330100/330105"
INST07 = f"{GONGSHU}/inst-007"
NOV = int(dt.datetime(2026, 11, 1, tzinfo=dt.timezone(dt.timedelta(hours=8))).timestamp()) * NS
DAY = 86_400 * NS


def site(auth: bool) -> Site:
    t = Transport(host="127.0.0.1", port=5020)
    return Site(
        site=SiteInfo(name="rollup"),
        orgs=(Org(path="330000", name="浙江省"), Org(path="330000/330100", name="杭州市"), Org(path=XIHU, name="西湖区"),
              Org(path=INST42, name="中心"), Org(path=STREET, name="北山街道"), Org(path=INST101, name="街道办"),
              Org(path=GONGSHU, name="拱墅区"), Org(path=INST07, name="七局")),
        buildings=(Building(id="hq", org=INST42, name="主楼", floor_area_m2=10000, occupants=400, quota_class="A"),
                   Building(id="annex", org=INST42, name="附楼", floor_area_m2=5000, occupants=100, quota_class="B"),
                   Building(id="b101", org=INST101, floor_area_m2=4000, occupants=80, quota_class="A"),
                   Building(id="b7", org=INST07, floor_area_m2=3000, occupants=60, quota_class="A")),
        meters=(Meter(id="m-hq-main", profile="chint-dtsu666", building="hq", transport=t),
                Meter(id="m-hq-hvac", profile="chint-dtsu666", building="hq", transport=t, parent="m-hq-main",
                      item="01B00"),
                Meter(id="m-annex-main", profile="chint-dtsu666", building="annex", transport=t),
                Meter(id="m-101", profile="chint-dtsu666", building="b101", transport=t),
                Meter(id="m-b7", profile="chint-dtsu666", building="b7", transport=t)),
        vehicles=(Vehicle(id="v1", org=INST42), Vehicle(id="v2", org=INST101), Vehicle(id="v7", org=INST07)),
        api=Api(auth=auth))


def energy(scope: str, ident: str, org: str, kwh: float, area: float, people: int, t: int = NOV,
           period: str = "month") -> Point:
    return Point("energy_indicator", {"scope": scope, "id": ident, "org": org, "period": period, "carrier": "all"},
                 {"electricity_kwh": kwh, "kwh_per_m2": kwh / area, "kgce": kwh * 0.1229,
                  "kgce_per_person": kwh * 0.1229 / people, "factor_set": "gb2589-2020"}, t)


def points() -> list[Point]:
    pts = [energy("building", "hq", INST42, 10000, 10000, 400), energy("building", "annex", INST42, 6000, 5000, 100),
           energy("building", "b101", INST101, 3000, 4000, 80), energy("building", "b7", INST07, 900, 3000, 60),
           energy("org", INST42, INST42, 16000, 15000, 500), energy("org", STREET, STREET, 3000, 4000, 80),
           energy("org", INST101, INST101, 3000, 4000, 80), energy("org", XIHU, XIHU, 19000, 19000, 580),
           energy("org", INST07, INST07, 900, 3000, 60), energy("org", GONGSHU, GONGSHU, 900, 3000, 60),
           energy("org", INST42, INST42, 999, 15000, 500, t=NOV - 31 * DAY)]   # October: another period
    for ident, util, disp, hol, trips in ((INST42, 0.2, 1.0, 2, 30), (STREET, 0.1, 0.0, 0, 0), (XIHU, 0.15, 0.5, 2, 30),
                                          (INST07, 0.3, 1.0, 1, 9)):
        pts.append(Point("fleet_indicator", {"scope": "org", "id": ident, "org": ident, "period": "month"},
                         {"utilisation": util, "dispatch_rate": disp, "holiday_trips": hol, "trips": trips}, NOV))
    for meter, org, fields in (("m-hq-main", INST42, {"savings": 500.0, "predicted": 10500.0, "savings_uncertainty": 30.0,
                                                      "sufficient": True}),
                               ("m-annex-main", INST42, {"savings": -200.0, "predicted": 5800.0,
                                                         "savings_uncertainty": 40.0, "sufficient": True}),
                               ("m-101", INST101, {"sufficient": False, "reasons": "too_many_days_with_missing_data"})):
        pts.append(Point("energy_baseline", {"meter": meter, "org": org, "model_type": "hdd_only", "period": "month"},
                         fields, NOV))
    for meter, org, day in (("m-hq-hvac", INST42, 3), ("m-hq-hvac", INST42, 4), ("m-101", INST101, 20),
                            ("m-hq-main", INST42, -5)):          # the last: October
        pts.append(Point("energy_anomaly", {"meter": meter, "org": org, "rule": "outside_prediction_interval"},
                         {"actual": 1.0, "predicted": 2.0}, NOV + day * DAY))
    for meter, org, pred, act in (("m-hq-main", INST42, 400.0, 380.0), ("m-annex-main", INST42, 200.0, 210.0)):
        pts.append(Point("energy_baseline_day", {"meter": meter, "org": org},
                         {"predicted": pred, "actual": act, "lower": pred - 39.2, "upper": pred + 39.2, "reporting": True},
                         NOV + 9 * DAY))
    return pts


@pytest.fixture
def app_of(tmp_path):
    made = []

    def make(auth: bool = False):
        store = EmbeddedStore(tmp_path / f"s{len(made)}.sqlite")
        store.write_points(points())
        keys = KeyStore(tmp_path / f"k{len(made)}.sqlite", hasher=PasswordHasher(time_cost=1, memory_cost=1024,
                                                                                parallelism=1)) if auth else None
        ctx = ApiContext(site=site(auth), live=LiveState(), query=StoreQuery(store), keys=keys, auth=auth,
                         rate_per_s=1000.0, rate_burst=1000.0)
        made.append((store, keys))
        return create_app(ctx), store, keys

    yield make
    for store, keys in made:
        store.close()
        if keys is not None:
            keys.close()


async def get(app, url: str, key: str | None = None) -> httpx.Response:
    h = {"Authorization": f"Bearer {key}"} if key else {}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t", headers=h) as c:
        return await c.get(url)


async def test_a_districts_institutions_ranked_with_their_figures(app_of):
    app, _, _ = app_of()
    r = await get(app, f"/v1/rollup?org={XIHU}&period=month&at=2026-11-10")
    assert r.status_code == 200, r.text
    d = r.json()
    assert (d["org"], d["level"], d["period"], d["ranked_by"], d["order"]) == (XIHU, "district", "month", "kwh_per_m2", "desc")
    assert d["start"] == "2026-11-01T00:00:00.000+08:00" and d["end"] == "2026-12-01T00:00:00.000+08:00"
    rows = {x["org"]: x for x in d["rows"]}
    assert list(rows) == [INST42, STREET]          # 1.067 kWh/m² before 0.75
    inst = rows[INST42]
    assert (inst["rank"], inst["level"], inst["buildings"], inst["floor_area_m2"], inst["occupants"]) == (1, "institution", 2, 15000, 500)
    assert inst["kwh"] == 16000 and inst["kwh_per_m2"] == pytest.approx(16000 / 15000)
    assert inst["kgce_per_person"] == pytest.approx(16000 * 0.1229 / 500)
    quota = (10000 * 70 + 5000 * 90) / 15000                     # floor-area-weighted A and B
    assert inst["quota_kwh_per_m2"] == pytest.approx(quota)
    assert inst["quota_progress"] == pytest.approx((16000 / 15000) / (quota * 30 / 365))
    assert inst["savings_kwh"] == pytest.approx(300) and inst["savings_pct"] == pytest.approx(100 * 300 / 16300)
    assert inst["savings_uncertainty_kwh"] == pytest.approx(50.0)   # 30 and 40 in quadrature
    assert inst["anomalies"] == 2                                    # November's days, not October's
    assert (inst["vehicles"], inst["utilisation"], inst["dispatch_rate"], inst["holiday_trips"], inst["trips"]) == (1, 0.2, 1.0, 2, 30)
    assert inst["href"] == f"/v1/rollup?org={INST42}&period=month&at=2026-11-10"
    street = rows[STREET]
    assert (street["level"], street["rank"], street["anomalies"], street["vehicles"]) == ("street", 2, 1, 1)
    assert street["savings_kwh"] is None and street["savings_reasons"] == ["too_many_days_with_missing_data"]
    total = d["total"]
    assert total["org"] == XIHU and total["kwh"] == 19000 and total["savings_kwh"] is None and total["anomalies"] == 3
    assert GONGSHU not in r.text and INST07 not in r.text

    # the link down: the street's institution; an institution's rows are its buildings
    r = await get(app, rows[STREET]["href"])
    assert [x["org"] for x in r.json()["rows"]] == [INST101]
    r = await get(app, inst["href"])
    b = {x["building"]: x for x in r.json()["rows"]}
    assert set(b) == {"hq", "annex"} and b["annex"]["rank"] == 1 and b["hq"]["rank"] == 2   # 1.2 before 1.0 kWh/m²
    assert b["hq"]["level"] == "building" and b["hq"]["savings_kwh"] == 500 and b["annex"]["quota_kwh_per_m2"] == 90
    assert b["hq"]["anomalies"] == 2 and b["hq"]["vehicles"] == 0 and b["hq"]["utilisation"] is None


async def test_ranked_by_any_figure_either_way(app_of):
    app, _, _ = app_of()
    d = (await get(app, f"/v1/rollup?org={XIHU}&at=2026-11-10&sort=anomalies&order=asc")).json()
    assert d["ranked_by"] == "anomalies" and [x["org"] for x in d["rows"]] == [STREET, INST42]
    d = (await get(app, f"/v1/rollup?org={XIHU}&at=2026-11-10&sort=savings_kwh")).json()
    assert [(x["org"], x["rank"]) for x in d["rows"]] == [(INST42, 1), (STREET, 2)]   # no figure: last
    r = await get(app, f"/v1/rollup?org={XIHU}&sort=name")
    assert r.status_code == 422
    r = await get(app, f"/v1/rollup?org={XIHU}&orgg=1")
    assert r.status_code == 400 and "orgg" in r.text
    r = await get(app, f"/v1/rollup?org={XIHU}&period=year&at=9999-12-31")   # found by schemathesis: year 10000
    assert r.status_code == 400 and "at" in r.json()["detail"]


async def test_a_day_against_the_baseline(app_of):
    app, _, _ = app_of()
    d = (await get(app, f"/v1/rollup?org={INST42}&period=day&at=2026-11-10")).json()
    b = {x["building"]: x for x in d["rows"]}
    assert b["hq"]["savings_kwh"] == pytest.approx(20.0) and b["annex"]["savings_kwh"] == pytest.approx(-10.0)
    assert b["hq"]["savings_uncertainty_kwh"] == pytest.approx(20.0)   # the 95 % interval's half-width / 1.96
    assert d["total"]["savings_kwh"] == pytest.approx(10.0) and d["total"]["kwh"] is None   # no day row written


async def test_scoped_by_the_key(app_of):
    app, _, keys = app_of(auth=True)
    _, district = keys.create(XIHU, "viewer")
    _, inst = keys.create(INST42, "viewer")
    _, other = keys.create(INST07, "viewer")
    d = (await get(app, "/v1/rollup?at=2026-11-10", district)).json()
    assert d["org"] == XIHU and [x["org"] for x in d["rows"]] == [INST42, STREET]
    d = (await get(app, "/v1/rollup?at=2026-11-10", inst)).json()         # only itself: its buildings
    assert d["org"] == INST42 and {x["building"] for x in d["rows"]} == {"hq", "annex"}
    for url in (f"/v1/rollup?org={XIHU}", f"/v1/rollup?org={STREET}", f"/v1/rollup?org={GONGSHU}",
                "/v1/rollup?org=330000/330100", f"/v1/rollup?org={XIHU}/../330105", "/v1/rollup?org=330000/nope"):
        r = await get(app, url, inst)
        assert r.status_code == 404, (url, r.status_code)
    r = await get(app, f"/v1/rollup?org={INST42}", other)
    assert r.status_code == 404 and "inst-042" not in r.text
    assert (await get(app, "/v1/rollup")).status_code == 401


async def test_kept_answers_never_outlive_a_write(app_of):
    app, store, _ = app_of()
    url = f"/v1/rollup?org={XIHU}&period=month&at=2026-11-10"
    first = (await get(app, url)).json()
    again = await get(app, url)
    assert again.json() == first and app.state.api.cache.hits >= 1
    # another day's, another period's rows: the answer stays kept
    hits = app.state.api.cache.hits
    store.write_points([energy("org", INST42, INST42, 1.0, 15000, 500, t=NOV - 62 * DAY)])
    assert (await get(app, url)).json() == first and app.state.api.cache.hits == hits + 1
    # November's row of the institution rewritten (a late reading): the next answer has it
    store.write_points([energy("org", INST42, INST42, 18000, 15000, 500)])
    d = (await get(app, url)).json()
    assert {x["org"]: x["kwh"] for x in d["rows"]}[INST42] == 18000
    # and the energy indicator route alike
    q = f"/v1/indicators/energy?scope=org&id={INST42}&period=month&from=2026-11-01T00:00:00&to=2026-11-02T00:00:00"
    assert (await get(app, q)).json()["items"][0]["values"]["electricity_kwh"] == 18000
    store.write_points([energy("org", INST42, INST42, 17000, 15000, 500)])
    assert (await get(app, q)).json()["items"][0]["values"]["electricity_kwh"] == 17000
