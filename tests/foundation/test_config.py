"""Site files: a good one loads; each kind of bad one is refused with file, line, object and field."""

import pytest

from edge.config import Site, TransportKind, load_site, org_within, parse_site
from edge.errors import ConfigError

GOOD = """
orgs:
  - {path: "330000", name: Zhejiang}
  - {path: "330000/330100", name: Hangzhou}
buildings:
  - {id: hq, org: "330000/330100", floor_area_m2: 1000, occupants: 50}
meters:
  - id: m1
    profile: chint-dtsu666
    building: hq
    transport: {kind: tcp, host: 127.0.0.1, port: 5020}
vehicles:
  - {id: v1, plate: "浙A·12345", org: "330000/330100"}
"""


def test_good_site_loads():
    site = parse_site(GOOD, "site.yaml")
    assert isinstance(site, Site)
    assert site.meters[0].transport.kind is TransportKind.tcp
    assert site.meter_org(site.meters[0]) == "330000/330100"
    assert site.vehicles[0].plate == "浙A·12345"


def _err(text: str) -> str:
    with pytest.raises(ConfigError) as e:
        parse_site(text, "site.yaml")
    return str(e.value)


def test_unknown_key_names_file_line_object_and_key():
    msg = _err(GOOD.replace("    building: hq\n", "    building: hq\n    colour: red\n"))
    assert "site.yaml:11" in msg and "meters[0] (id=m1)" in msg and "unknown key 'colour'" in msg


def test_duplicate_meter_id():
    dup = GOOD.replace("vehicles:", "  - {id: m1, profile: x, building: hq, transport: {host: 127.0.0.1, port: 1}}\nvehicles:")
    msg = _err(dup)
    assert "duplicate id 'm1'" in msg and "meters[1]" in msg


def test_negative_interval():
    msg = _err(GOOD.replace("    building: hq\n", "    building: hq\n    interval_s: -5\n"))
    assert "meters[0] (id=m1)" in msg and "interval_s" in msg and "greater than 0" in msg


def test_vehicle_without_org():
    msg = _err(GOOD.replace('{id: v1, plate: "浙A·12345", org: "330000/330100"}', "{id: v1}"))
    assert "vehicles[0] (id=v1)" in msg and "vehicles.org" in msg and "required" in msg.lower()


def test_unknown_org_and_building_references():
    msg = _err(GOOD.replace("building: hq", "building: nope"))
    assert "unknown building 'nope'" in msg
    msg = _err(GOOD.replace('org: "330000/330100"}\n', 'org: "330000/339999"}\n'))
    assert "unknown org '330000/339999'" in msg


def test_org_path_tricks_refused():
    msg = _err(GOOD.replace('{path: "330000/330100", name: Hangzhou}', '{path: "330000/../330105", name: x}'))
    assert "orgs[1]" in msg


def test_transport_needs_its_address():
    msg = _err(GOOD.replace("{kind: tcp, host: 127.0.0.1, port: 5020}", "{kind: rtu}"))
    assert "serial_port" in msg and "meters[0] (id=m1)" in msg


def test_invalid_yaml_names_the_line():
    msg = _err("orgs:\n  - {path: 1\n")
    assert "site.yaml:" in msg and "not valid YAML" in msg


def test_secret_from_environment(monkeypatch):
    monkeypatch.setenv("MY_PW", "s3cret")
    site = parse_site(GOOD + "mqtt: {broker: 'mqtt://127.0.0.1:1883', password: '${MY_PW}'}\n")
    assert site.mqtt.password == "s3cret"
    monkeypatch.setenv("EDGE_MQTT_PASSWORD", "override")
    assert parse_site(GOOD + "mqtt: {password: x}\n").mqtt.password == "override"


def test_missing_environment_variable_is_named():
    msg = _err(GOOD + "mqtt: {password: '${NOT_SET_ANYWHERE_42}'}\n")
    assert "NOT_SET_ANYWHERE_42" in msg and "mqtt.password" in msg


def test_unreadable_file(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_site(tmp_path / "nope.yaml")
    assert "nope.yaml" in str(e.value)


def test_example_site_is_valid(monkeypatch):
    monkeypatch.setenv("EDGE_MQTT_PASSWORD", "x")
    site = load_site("examples/site.yaml")
    assert {m.id for m in site.meters} == {"hq-main", "hq-hvac", "hq-lighting", "hq-other", "hq-water"}
    by = {m.id: m for m in site.meters}
    assert by["hq-hvac"].parent == "hq-main" and by["hq-hvac"].item == "01B00"
    assert by["hq-other"].terms == ((1.0, "hq-main"), (-1.0, "hq-hvac"), (-1.0, "hq-lighting"))
    assert by["hq-water"].item == "02000"


def test_an_unquoted_numeric_item_code_is_refused_with_what_to_write():
    from edge.config import parse_site
    text = ("orgs: [{path: '330000', name: Z}]\nmeters:\n  - {id: w, profile: tuf2000m-water, org: '330000', "
            "carrier: water, item: 02000, transport: {kind: tcp, host: h, port: 1}}\n")
    with pytest.raises(ConfigError) as e:
        parse_site(text, "site.yaml")
    assert "write the code in quotes" in str(e.value) and "meters.item" in str(e.value)


@pytest.mark.parametrize("path, scope, inside", [
    ("330000/330100/330106", "330000/330100", True),
    ("330000/330100", "330000/330100", True),
    ("330000/3301000", "330000/330100", False),
    ("330000/330105", "330000/330106", False),
    ("330000", "330000/330100", False),
])
def test_org_within_is_segment_wise(path, scope, inside):
    assert org_within(path, scope) is inside


def test_holiday_dates_unquoted_in_yaml_are_taken_and_bad_ones_refused_at_load():
    # an operator entering the next year's holidays writes them as YAML does
    site = parse_site("analytics:\n  holidays_extra: [2027-01-01, '2027-02-06']\n  workdays_extra:\n    - 2027-02-14\n")
    assert site.analytics.holidays_extra == ("2027-01-01", "2027-02-06")
    assert site.analytics.workdays_extra == ("2027-02-14",)
    with pytest.raises(ConfigError, match=r"site.yaml:2.*holidays_extra.*'2027-1-1' is not an ISO date"):
        parse_site("analytics:\n  holidays_extra: ['2027-1-1']\n", file="site.yaml")
    with pytest.raises(ConfigError, match="not valid YAML.*month must be in 1..12"):
        parse_site("analytics:\n  holidays_extra: [2027-13-45]\n", file="site.yaml")


TIANDITU = ("api:\n  tile_url: 'https://t{s}.tianditu.gov.cn/vec_w/wmts?SERVICE=WMTS&REQUEST=GetTile&VERSION=1.0.0&LAYER=vec"
            "&STYLE=default&TILEMATRIXSET=w&FORMAT=tiles&TILEMATRIX={z}&TILEROW={y}&TILECOL={x}&tk=${TIANDITU_TK}'\n"
            "  tile_subdomains: '01234567'\n  tile_attribution: '© 天地图'\n")


def test_map_tiles_with_a_token_from_the_environment_and_their_datum(monkeypatch):
    """docs/api.md 'The map': 天地图 with its token from the environment; {s}, {z}, {x}, {y} are left for
    the map library; the datum is one of two, named in the refusal otherwise."""
    monkeypatch.setenv("TIANDITU_TK", "0123abcd")
    api = parse_site(GOOD + TIANDITU).api
    assert api.tile_url.startswith("https://t{s}.tianditu.gov.cn/") and api.tile_url.endswith("TILECOL={x}&tk=0123abcd")
    assert api.tile_subdomains == "01234567" and api.tile_crs.value == "wgs84" and api.tile_max_zoom == 18
    msg = _err(GOOD + "api: {tile_url: 'http://amap/{z}/{x}/{y}', tile_crs: bd09}\n")
    assert "api.tile_crs" in msg and "'wgs84' or 'gcj02'" in msg
