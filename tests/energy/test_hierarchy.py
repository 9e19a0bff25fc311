"""Buildings as they are metered: a main incomer with sub-meters behind it is counted once.

The regression first: the demo's building had a main incomer and the HVAC plant behind it, and
the building total was their sum (38.7 kW shown where the incomer read 19.5 kW)."""

import datetime as dt

import numpy as np
import pytest

from analytics.energy.jobs import ArraySource, compute_energy_range, meters_from_site
from analytics.periods import LocalCalendar
from edge.config import Site

CAL = LocalCalendar()
ORG = "330000/330100/330106/inst-042"
DAY = dt.date(2025, 10, 13)   # a Monday


def site(meters: list[dict], buildings=None, orgs=None) -> Site:
    return Site.model_validate({
        "orgs": orgs or [{"path": "330000", "name": "Z"}, {"path": "330000/330100", "name": "H"},
                         {"path": "330000/330100/330106", "name": "X"}, {"path": ORG, "name": "I"}],
        "buildings": buildings or [{"id": "hq", "org": ORG, "floor_area_m2": 12000, "occupants": 420}],
        "meters": meters,
    })


def tcp(port: int) -> dict:
    return {"kind": "tcp", "host": "127.0.0.1", "port": port}


def counters(kw: dict[str, float], carrier_field="active_energy_import_kwh", day=DAY, start=1000.0) -> ArraySource:
    """Each meter at a constant load (kW), read every 15 minutes over the day and a quarter each side."""
    t0 = CAL.midnight_ns(day) - 900 * 10**9
    t = t0 + np.arange(96 + 3, dtype=np.int64) * 900 * 10**9
    return ArraySource({(m, carrier_field): (t, start + p * 0.25 * np.arange(96 + 3)) for m, p in kw.items()})


def table(report, scope: str, period: str = "day", carrier: str = "electricity"):
    return next(t for t in report.tables if t.scope == scope and t.period.value == period and t.carriers
                and t.carriers[0] in (carrier, "all") and (carrier == "all") == (t.carriers[0] == "all"))


def value(report, scope: str, ident: str, carrier: str, name: str, period: str = "day", k: int = 0) -> float:
    for t in report.tables:
        if t.scope == scope and t.period.value == period:
            for r, (i, c) in enumerate(zip(t.ids, t.carriers)):
                if i == ident and c == carrier:
                    return float(t.fields[name][r, k])
    raise KeyError((scope, ident, carrier))


def test_incomer_and_hvac_behind_it_count_once_in_the_building():
    s = site([{"id": "main-incomer", "profile": "chint-dtsu666", "building": "hq", "transport": tcp(5020)},
              {"id": "hvac-plant", "profile": "acrel-adl400", "building": "hq", "parent": "main-incomer",
               "item": "01B00", "transport": tcp(5021)}])
    rep = compute_energy_range(counters({"main-incomer": 19.5, "hvac-plant": 19.2}), meters_from_site(s), DAY, DAY,
                               buildings=[("hq", ORG, 12000.0, 420)])
    b = table(rep, "building")
    assert b.value("hq", "consumption_kwh") == pytest.approx(19.5 * 24)      # the incomer, not 38.7 x 24
    org = table(rep, "org")
    for path in ("330000", "330000/330100", "330000/330100/330106", ORG):
        assert org.value(path, "consumption_kwh") == pytest.approx(19.5 * 24)
    allc = table(rep, "building", carrier="all")
    assert allc.value("hq", "kgce") == pytest.approx(19.5 * 24 * 0.1229)
    assert allc.value("hq", "kwh_per_m2") == pytest.approx(19.5 * 24 / 12000)


# --- a compound metered as it is wired -----------------------------------------------------------

def compound():
    """A campus incomer on the institution (no building) feeding two buildings: A has its own
    incomer with lighting, HVAC (with its cooling plant) and lifts behind it; B has no incomer of
    its own, so B is the campus incomer minus A (a virtual meter); A's 'other' loads are a virtual
    meter too. Plus a water meter tree and a gas meter."""
    buildings = [{"id": "A", "org": ORG, "floor_area_m2": 10000, "occupants": 300},
                 {"id": "B", "org": ORG, "floor_area_m2": 2000, "occupants": 50}]
    ms = [
        {"id": "campus", "profile": "chint-dtsu666", "org": ORG, "transport": tcp(1)},
        {"id": "a-main", "profile": "chint-dtsu666", "building": "A", "parent": "campus", "transport": tcp(2)},
        {"id": "a-light", "profile": "acrel-adl400", "building": "A", "parent": "a-main", "item": "01A00",
         "transport": tcp(3)},
        {"id": "a-hvac", "profile": "acrel-adl400", "building": "A", "parent": "a-main", "item": "01B00",
         "transport": tcp(4)},
        {"id": "a-chiller", "profile": "acrel-adl400", "building": "A", "parent": "a-hvac", "item": "01B10",
         "transport": tcp(5)},
        {"id": "a-lift", "profile": "acrel-adl400", "building": "A", "parent": "a-main", "item": "01C10",
         "transport": tcp(6)},
        {"id": "b-total", "building": "B", "parent": "campus", "formula": "campus - a-main"},
        {"id": "water", "profile": "tuf2000m-water", "org": ORG, "carrier": "water", "transport": tcp(7)},
        {"id": "a-water", "profile": "tuf2000m-water", "building": "A", "carrier": "water", "parent": "water",
         "item": "02000", "transport": tcp(8)},
        {"id": "gas", "profile": "fx-gas-corrector", "building": "A", "carrier": "gas", "item": "03A00",
         "transport": tcp(9)},
    ]
    kw = {"campus": 100.0, "a-main": 70.0, "a-light": 12.0, "a-hvac": 30.0, "a-chiller": 22.0, "a-lift": 5.0}
    src = counters(kw)
    src.data.update(counters({"water": 2.0, "a-water": 1.5}, "water_volume_m3").data)
    src.data.update(counters({"gas": 4.0}, "gas_volume_m3").data)
    return site(ms, buildings), src


def test_compound_totals_count_each_kwh_once():
    s, src = compound()
    rep = compute_energy_range(src, meters_from_site(s), DAY, DAY,
                               buildings=[("A", ORG, 10000.0, 300), ("B", ORG, 2000.0, 50)])
    b = table(rep, "building")
    assert b.value("A", "consumption_kwh") == pytest.approx(70 * 24)
    assert b.value("B", "consumption_kwh") == pytest.approx(30 * 24)          # campus minus A
    org = table(rep, "org")
    assert org.value(ORG, "consumption_kwh") == pytest.approx(100 * 24)       # the campus incomer alone
    assert org.value("330000", "consumption_kwh") == pytest.approx(100 * 24)
    # the buildings add up to the org: nothing counted twice, nothing lost
    assert b.value("A", "consumption_kwh") + b.value("B", "consumption_kwh") == pytest.approx(
        org.value(ORG, "consumption_kwh"))
    assert value(rep, "org", ORG, "water", "consumption_m3") == pytest.approx(2 * 24)
    assert value(rep, "building", "A", "water", "consumption_m3") == pytest.approx(1.5 * 24)
    assert value(rep, "building", "A", "gas", "consumption_m3") == pytest.approx(4 * 24)
    meter = table(rep, "meter")
    assert meter.value("b-total", "consumption_kwh") == pytest.approx(30 * 24)


def test_itemised_figures_add_up_to_the_total_with_the_unmetered_share():
    s, src = compound()
    rep = compute_energy_range(src, meters_from_site(s), DAY, DAY)
    day = next(t for t in rep.items if t.period.value == "day")
    a = day.breakdown("building", "A")
    assert a == pytest.approx({"01A00": 12 * 24, "01B00": 30 * 24, "01C00": 5 * 24,
                               "unmetered": (70 - 12 - 30 - 5) * 24})
    assert sum(a.values()) == pytest.approx(70 * 24)
    assert day.value("building", "A", "unmetered", field_name="share") == pytest.approx(23 / 70)
    sub = day.breakdown("building", "A", level=3)
    # HVAC's own remainder (30 - 22) stays HVAC, not split into sub-items; the lift is a sub-item
    assert sub == pytest.approx({"01A00": 12 * 24, "01B10": 22 * 24, "01B00": 8 * 24, "01C10": 5 * 24,
                                 "unmetered": 23 * 24})
    org = day.breakdown("org", ORG)
    # the campus' remainder beyond A and B is nothing: B is defined as what A does not take
    assert sum(org.values()) == pytest.approx(100 * 24)
    assert org["unassigned"] == pytest.approx(30 * 24)      # B: metered (virtually), no item
    assert org["unmetered"] == pytest.approx(23 * 24)
    water = day.breakdown("org", ORG, carrier="water")
    assert water == pytest.approx({"02000": 1.5 * 24, "unmetered": 0.5 * 24})
    month = next(t for t in rep.items if t.period.value == "month")
    assert month.breakdown("building", "A") == pytest.approx(a)
    pts = [p for p in rep.points if p.measurement == "energy_item" and p.tags["id"] == "A"
           and p.tags["period"] == "day" and p.tags["level"] == "2" and p.tags["carrier"] == "electricity"]
    assert {p.tags["item"]: p.fields["consumption_kwh"] for p in pts} == pytest.approx(a)
    assert sum(p.fields["share"] for p in pts) == pytest.approx(1.0)


@pytest.mark.parametrize("change, field, words", [
    ({"id": "x", "profile": "acrel-adl400", "building": "hq", "parent": "nope", "transport": tcp(9)},
     "meters.parent", "unknown parent meter 'nope'"),
    ({"id": "x", "profile": "tuf2000m-water", "building": "hq", "carrier": "water", "parent": "main",
      "transport": tcp(9)}, "meters.parent", "a meter sits behind one of its own carrier"),
    ({"id": "x", "profile": "acrel-adl400", "org": "330000/330100", "parent": "main", "transport": tcp(9)},
     "meters.parent", "counts only in its own org"),
    ({"id": "x", "building": "hq", "formula": "main - sub"}, "meters.parent", "a virtual meter names its parent"),
    ({"id": "x", "building": "hq", "parent": "sub", "formula": "main - sub"}, "meters.formula",
     "neither the parent 'sub' nor behind it"),
    ({"id": "x", "building": "hq", "parent": "main", "formula": "main - - sub"}, "meters.formula",
     "two operators in a row"),
    ({"id": "x", "building": "hq", "parent": "main", "formula": "main - sub", "profile": "acrel-adl400"},
     "meters", "has no profile or transport"),
])
def test_check_refuses_a_bad_hierarchy_naming_meter_and_field(change, field, words):
    from edge.config import parse_site
    from edge.errors import ConfigError
    import yaml
    doc = {"orgs": [{"path": "330000", "name": "Z"}, {"path": "330000/330100", "name": "H"},
                    {"path": "330000/330100/330106", "name": "X"}, {"path": ORG, "name": "I"}],
           "buildings": [{"id": "hq", "org": ORG, "floor_area_m2": 100, "occupants": 1}],
           "meters": [{"id": "main", "profile": "chint-dtsu666", "building": "hq", "transport": tcp(1)},
                      {"id": "sub", "profile": "acrel-adl400", "building": "hq", "parent": "main", "transport": tcp(2)},
                      change]}
    with pytest.raises(ConfigError) as e:
        parse_site(yaml.safe_dump(doc, allow_unicode=True), "site.yaml")
    msg = str(e.value)
    assert words in msg and "meters[2] (id=x)" in msg and field in msg, msg


def test_check_refuses_a_cycle():
    from edge.config import parse_site
    from edge.errors import ConfigError
    import yaml
    doc = {"orgs": [{"path": "330000", "name": "Z"}],
           "meters": [{"id": "a", "profile": "chint-dtsu666", "org": "330000", "parent": "c", "transport": tcp(1)},
                      {"id": "b", "profile": "chint-dtsu666", "org": "330000", "parent": "a", "transport": tcp(2)},
                      {"id": "c", "profile": "chint-dtsu666", "org": "330000", "parent": "b", "transport": tcp(3)}]}
    with pytest.raises(ConfigError) as e:
        parse_site(yaml.safe_dump(doc), "site.yaml")
    assert "parent chain forms a cycle: a -> c -> b -> a" in str(e.value)
    assert "meters.parent" in str(e.value)


def test_items_are_checked_against_the_classification():
    from analytics.energy.items import check_items
    s = site([{"id": "main", "profile": "chint-dtsu666", "building": "hq", "transport": tcp(1)},
              {"id": "hvac", "profile": "acrel-adl400", "building": "hq", "parent": "main", "item": "01B00",
               "transport": tcp(2)},
              {"id": "light-in-hvac", "profile": "acrel-adl400", "building": "hq", "parent": "hvac", "item": "01A10",
               "transport": tcp(3)},
              {"id": "made-up", "profile": "acrel-adl400", "building": "hq", "parent": "main", "item": "01Z90",
               "transport": tcp(4)},
              {"id": "water-as-hvac", "profile": "tuf2000m-water", "building": "hq", "carrier": "water",
               "item": "01B00", "transport": tcp(5)}])
    probs = {p.meter: p.message for p in check_items(s.meters)}
    assert "not within 01B00" in probs["light-in-hvac"] and "counted in both items" in probs["light-in-hvac"]
    assert "unknown item '01Z90'" in probs["made-up"]
    assert "this meter measures water" in probs["water-as-hvac"]
    assert set(probs) == {"light-in-hvac", "made-up", "water-as-hvac"}


# --- children above their parent: a named alert, not negative losses -----------------------------

def test_children_above_the_parent_raise_an_alert_on_the_meters_concerned():
    """A sub-meter with its CT ratio entered twice too large reads double: from 09:00 on, the
    children measure more than the incomer."""
    s = site([{"id": "main", "profile": "chint-dtsu666", "building": "hq", "transport": tcp(1)},
              {"id": "hvac", "profile": "acrel-adl400", "building": "hq", "parent": "main", "item": "01B00",
               "transport": tcp(2)},
              {"id": "light", "profile": "acrel-adl400", "building": "hq", "parent": "main", "item": "01A00",
               "transport": tcp(3)},
              {"id": "rest", "building": "hq", "parent": "main", "formula": "main - hvac - light"}])
    src = counters({"main": 40.0, "hvac": 20.0, "light": 10.0})
    t, v = src.data[("hvac", "active_energy_import_kwh")]
    k = np.arange(v.size)
    v2 = np.where(k > 37, v + (k - 37) * 0.25 * 20.0, v)          # doubled from 09:00 (reading 37 is 09:00)
    src.data[("hvac", "active_energy_import_kwh")] = (t, v2)
    rep = compute_energy_range(src, meters_from_site(s), DAY, DAY)
    kinds = sorted((a.rule, a.meter) for a in rep.alerts)
    assert kinds == [("children_exceed_parent", "hvac"), ("children_exceed_parent", "light"),
                     ("children_exceed_parent", "main"), ("virtual_negative", "rest")]
    a = next(a for a in rep.alerts if a.meter == "main")
    assert a.start_ns == CAL.midnight_ns(DAY) + 9 * 3600 * 10**9 and a.quarters == 60   # 09:00 to midnight
    assert a.parent_total == pytest.approx(40 * 15) and a.children_total == pytest.approx(50 * 15)
    assert "check CT ratios" in a.message and a.children == ("hvac", "light")
    pts = [p for p in rep.points if p.measurement == "alert"]
    assert {p.tags["meter"] for p in pts} == {"main", "hvac", "light", "rest"}
    assert all(p.tags["kind"] in ("children_exceed_parent", "virtual_negative") and p.tags["org"] == ORG for p in pts)
    # the totals are still those of the incomer: the fault is named, not averaged in
    assert table(rep, "building").value("hq", "consumption_kwh") == pytest.approx(40 * 24)


def test_children_within_tolerance_of_the_parent_raise_nothing():
    s = site([{"id": "main", "profile": "chint-dtsu666", "building": "hq", "transport": tcp(1)},
              {"id": "hvac", "profile": "acrel-adl400", "building": "hq", "parent": "main", "transport": tcp(2)}])
    rep = compute_energy_range(counters({"main": 20.0, "hvac": 20.8}), meters_from_site(s), DAY, DAY)   # +4 %
    assert rep.alerts == []
