"""The demo district: its org tree, buildings, meters and vehicles, with ids that stay put.

A district (西湖区) as a district administration (区机关事务管理局) sees it: four institutions on two
levels of the org tree (two directly under the district, two under a street office), five metered
buildings of six meters each (a main incomer with lighting, HVAC and power sub-meters behind it on
the building's own RS-485 line, a water and a gas meter: ``edge.app.demo.institution_meters``),
and twenty official vehicles, each with its institution's yard as its home geofence.

Everything here is data; ``edge.app.demo`` turns it into simulators and a site. The ids are listed
in docs/api.md ("The demo district") for the dashboard and scripts that rely on them. Codes below
the district (``inst-042``, ``330106004``) and the yards' coordinates are illustrative.
"""

from __future__ import annotations

from dataclasses import dataclass

PROVINCE = "330000"
CITY = "330000/330100"
DISTRICT = "330000/330100/330106"
STREET = "330000/330100/330106/330106004"
INST_CENTRE = "330000/330100/330106/inst-042"     # kept from the one-building demo
INST_EDU = "330000/330100/330106/inst-043"
INST_STREET_OFFICE = "330000/330100/330106/330106004/inst-101"
INST_CLINIC = "330000/330100/330106/330106004/inst-102"

# (path, name, level)
ORGS: tuple[tuple[str, str, str], ...] = (
    (PROVINCE, "浙江省", "province"),
    (CITY, "杭州市", "city"),
    (DISTRICT, "西湖区", "district"),
    (INST_CENTRE, "西湖区机关事务管理中心", "institution"),
    (INST_EDU, "西湖区教育局", "institution"),
    (STREET, "北山街道", "street"),
    (INST_STREET_OFFICE, "北山街道办事处", "institution"),
    (INST_CLINIC, "北山街道社区卫生服务中心", "institution"),
)


@dataclass(frozen=True)
class DemoBuilding:
    id: str
    org: str
    name: str
    floor_area_m2: float
    occupants: int
    scale: float          # the load model's circuits times this: 50-85 kWh/(m²·a), offices around the 70 quota
    seed: int             # the simulators' seed (loads, noise)
    yard: str             # the home geofence of the institution's vehicles


@dataclass(frozen=True)
class Yard:
    name: str
    org: str
    lat: float
    lon: float
    radius_m: float = 300.0


BUILDINGS: tuple[DemoBuilding, ...] = (
    DemoBuilding("hq", INST_CENTRE, "办公主楼", 12000, 420, 7.25, 0, "hq-yard"),
    DemoBuilding("hq-annex", INST_CENTRE, "附楼", 4500, 150, 2.47, 1, "hq-yard"),
    DemoBuilding("edu", INST_EDU, "教育局办公楼", 8000, 260, 3.7, 2, "edu-yard"),
    DemoBuilding("beishan", INST_STREET_OFFICE, "街道办公楼", 5000, 120, 3.37, 3, "beishan-yard"),
    DemoBuilding("clinic", INST_CLINIC, "卫生服务中心", 3500, 90, 2.78, 4, "clinic-yard"),
)

YARDS: tuple[Yard, ...] = (
    Yard("hq-yard", INST_CENTRE, 30.2741, 120.1551),
    Yard("edu-yard", INST_EDU, 30.2815, 120.1380),
    Yard("beishan-yard", INST_STREET_OFFICE, 30.2660, 120.1500),
    Yard("clinic-yard", INST_CLINIC, 30.2700, 120.1440),
)

# vehicles veh-0001..veh-0020: (first number, how many, org, yard)
FLEETS: tuple[tuple[int, int, str, str], ...] = (
    (1, 8, INST_CENTRE, "hq-yard"),              # the district's vehicle pool (公务用车平台)
    (9, 5, INST_EDU, "edu-yard"),
    (14, 4, INST_STREET_OFFICE, "beishan-yard"),
    (18, 3, INST_CLINIC, "clinic-yard"),
)


# how busy a vehicle is on a working day (0..1; the others by a formula in edge.app.demo)
ACTIVITY = {"veh-0001": 0.9, "veh-0002": 0.85, "veh-0013": 0.08}


@dataclass(frozen=True)
class DemoEvent:
    """Something the history tells, for the savings and anomalies to find: from ``days_before`` days
    before the last closed day, for ``days`` days (None: to the end), the circuit of ``meter`` draws
    ``factor`` times its model plus ``extra_share`` of its peak."""

    meter: str
    days_before: int
    days: int | None
    what: str
    factor: float = 1.0
    extra_share: float = 0.0


EVENTS: tuple[DemoEvent, ...] = (
    DemoEvent("hq-lighting", 75, None, "LED lighting retrofit: the lighting board draws 30 % less", factor=0.7),
    DemoEvent("beishan-hvac", 9, 3, "HVAC left running day and night (a building-automation schedule fault)",
              extra_share=0.8),
)


@dataclass(frozen=True)
class DemoVehicle:
    id: str
    plate: str
    org: str
    yard: str


def vehicles() -> tuple[DemoVehicle, ...]:
    out = []
    for first, n, org, yard in FLEETS:
        for k in range(first, first + n):
            out.append(DemoVehicle(f"veh-{k:04d}", f"浙A·D{k:04d}", org, yard))
    return tuple(out)


def meter_ids() -> tuple[str, ...]:
    """Every meter id, building by building: ``{building}-main`` and behind it ``-lighting``, ``-hvac``,
    ``-power``; ``-water``, ``-gas``."""
    return tuple(f"{b.id}-{k}" for b in BUILDINGS for k in ("main", "lighting", "hvac", "power", "water", "gas"))
