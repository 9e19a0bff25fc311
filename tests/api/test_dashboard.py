"""The dashboard in a real headless Chromium (Debian's chromium + chromedriver, via selenium):
the energy and fleet views load, live values update from the SSE stream, the map takes its tiles
from the configured server or, without them, draws a coordinate grid, and the console has no errors.
Screenshots go to tests/artifacts/. (The district view over a year of history:
tests/api/test_dashboard_district.py.)"""

from __future__ import annotations

import time

from api.app import create_app
from edge.point import Point
from tests.api.apienv import INST42, ThreadedServer
from tests.support.browser import ARTIFACTS, driver_for, needs_browser, wait, wait_view

pytestmark = needs_browser


def test_dashboard_energy_and_fleet_views_update_live(env, tmp_path):
    from selenium.webdriver.common.by import By

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    env.store.write_points([Point("energy_indicator", {"scope": "building", "id": "hq", "org": INST42, "period": "day",
                                                       "carrier": "electricity"},
                                  {"consumption_kwh": 812.5, "off_hours_share": 0.31},
                                  env.now_ns - (env.now_ns + 8 * 3600 * 10**9) % (86400 * 10**9))])  # today's row (local day)
    app = create_app(env.ctx)
    with ThreadedServer(app) as srv:
        d = driver_for(tmp_path)
        try:
            d.get(srv.url + "/#energy")
            wait(lambda: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1", what="dashboard ready")
            wait_view(d, "energy")
            wait(lambda: "on" in d.find_element(By.ID, "conn").get_attribute("class"), what="live stream open")
            power = d.find_element(By.ID, "power-hq")
            assert power.text.endswith("kW") and power.text != "— kW"
            assert "812.5" in d.find_element(By.ID, "today-hq").text
            # the charts (uPlot, vendored): energy against the baseline and by item, a canvas each
            wait(lambda: d.find_elements(By.CSS_SELECTOR, "#chart-energy .uplot canvas"), what="energy chart")
            assert d.find_element(By.ID, "chart-energy").get_attribute("data-unit") == "kWh per month"  # a year by month
            # a new reading arrives: building power and the meter row change live
            srv.call(env.live.update, [Point("meter", {"meter": "m-hq-main", "org": INST42, "building": "hq"},
                                             {"active_power_total_kw": 1234.5}, time.time_ns())])
            wait(lambda: "1,234.50" in d.find_element(By.CSS_SELECTOR, 'tr[data-meter="m-hq-main"] .power').text,
                 what="meter row update")
            # the building's power is its main incomer's: the HVAC plant behind it is not added again
            wait(lambda: d.find_element(By.ID, "power-hq").text == "1,234.5 kW", what="building power update")
            items = d.find_element(By.ID, "items-hq")
            assert "HVAC" in items.find_element(By.CSS_SELECTOR, 'dt[data-item="01B00"]').text
            assert "unmetered and losses" in items.find_element(By.CSS_SELECTOR, 'dt[data-item="unmetered"]').text
            assert "40 %" in items.text
            hvac_row = d.find_element(By.CSS_SELECTOR, 'tr[data-meter="m-hq-hvac"]')
            assert hvac_row.get_attribute("data-depth") == "1" and "01B00" in hvac_row.text
            d.save_screenshot(str(ARTIFACTS / "dashboard-energy.png"))

            d.get(srv.url + "/#fleet")
            wait_view(d, "fleet")
            wait(lambda: "on" in d.find_element(By.ID, "conn").get_attribute("class"), what="live stream open")
            rows = d.find_elements(By.CSS_SELECTOR, "#vehicle-table tbody tr")
            assert {r.get_attribute("data-vehicle") for r in rows} == {"veh-01", "veh-07", "veh-x"}
            # its JT/T 808 terminal (GET /v1/terminals): listed, not connected yet
            wait(lambda: d.find_element(By.CSS_SELECTOR, 'tr[data-vehicle="veh-01"] .terminal').text == "never seen",
                 what="terminal status")
            assert len(d.find_elements(By.CSS_SELECTOR, "#trip-table tbody tr")) == 3
            # the map (Leaflet, vendored): a marker per vehicle, today's tracks, the geofences; a grid without tiles
            wait(lambda: len(d.find_elements(By.CSS_SELECTOR, "#map path.vehicle")) == 3, what="vehicle markers")
            assert len(d.find_elements(By.CSS_SELECTOR, "#map path.track")) == 3
            assert d.find_element(By.ID, "map").get_attribute("data-mode") == "grid"
            assert "no tiles configured" in d.find_element(By.ID, "map-mode").text
            for i in range(5):
                srv.call(env.live.update, [Point("position", {"vehicle": "veh-01", "org": INST42},
                                                 {"lat": 30.30 + 0.002 * i, "lon": 120.20 + 0.002 * i,
                                                  "speed_kmh": 61.0 + i, "acc": True}, time.time_ns())])
                time.sleep(0.05)
            srv.call(env.live.update, [Point("alert", {"vehicle": "veh-01", "org": INST42, "kind": "overspeed"},
                                             {"message": "浙A·D0001 above 60 km/h"}, time.time_ns())])
            wait(lambda: d.find_element(By.CSS_SELECTOR, 'tr[data-vehicle="veh-01"] .speed').text == "65",
                 what="vehicle speed update")
            wait(lambda: "浙A·D0001 above 60 km/h" in d.find_element(By.ID, "alerts").text, what="live alert")
            assert "moving" in d.find_element(By.CSS_SELECTOR, 'tr[data-vehicle="veh-01"] .status').text
            d.save_screenshot(str(ARTIFACTS / "dashboard-fleet.png"))
            errors = [e for e in d.get_log("browser") if e["level"] == "SEVERE"]
            assert errors == []
        finally:
            d.quit()


def _png(rgb: tuple[int, int, int]) -> bytes:
    """A 256x256 single-colour PNG (a stand-in for a local tile server's tiles)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    row = b"\x00" + bytes(rgb) * 256
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 256, 256, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(row * 256)) + chunk(b"IEND", b""))


def test_fleet_map_uses_the_configured_tile_server(env, tmp_path):
    from fastapi import FastAPI, Response
    from selenium.webdriver.common.by import By

    from edge.config import Api

    requested: list[str] = []
    tiles = FastAPI()

    @tiles.get("/tiles/{z}/{x}/{y}.png")
    async def tile(z: int, x: int, y: int) -> Response:
        requested.append(f"{z}/{x}/{y}")
        return Response(_png((200, 225, 200) if (x + y) % 2 else (225, 235, 245)), media_type="image/png")

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with ThreadedServer(tiles) as tile_srv:
        env.ctx.site = env.ctx.site.model_copy(update={"api": Api(tile_url=tile_srv.url + "/tiles/{z}/{x}/{y}.png")})
        with ThreadedServer(create_app(env.ctx)) as srv:
            d = driver_for(tmp_path)
            try:
                d.get(srv.url + "/#fleet")
                wait_view(d, "fleet")
                wait(lambda: len(requested) >= 2, what="tiles requested")
                wait(lambda: d.find_element(By.ID, "map").get_attribute("data-mode") == "tiles", what="tiles drawn")
                assert "map tiles" in d.find_element(By.ID, "map-mode").text
                assert d.find_elements(By.CSS_SELECTOR, "#map img.leaflet-tile-loaded")
                z = {int(r.split("/")[0]) for r in requested}
                assert all(10 <= zz <= 19 for zz in z)  # a few km of Hangzhou: a city-scale zoom
                time.sleep(0.3)
                d.save_screenshot(str(ARTIFACTS / "dashboard-fleet-tiles.png"))
                assert [e for e in d.get_log("browser") if e["level"] == "SEVERE"] == []
            finally:
                d.quit()


def test_fleet_map_falls_back_to_the_grid_when_tiles_fail_and_asks_gcj02_for_gcj02_tiles(env, tmp_path):
    """A tile server that does not answer (the edge offline, a wrong URL) leaves the coordinate grid
    as the background; GCJ-02 tiles (Amap, Tencent) make the page ask for positions, tracks and
    geofences in GCJ-02 and say so."""
    from selenium.webdriver.common.by import By

    from edge.config import Api, TileCrs
    from tests.api.apienv import free_port

    dead = f"http://127.0.0.1:{free_port()}"     # nothing listens there
    env.ctx.site = env.ctx.site.model_copy(update={"api": Api(tile_url=dead + "/{z}/{x}/{y}.png", tile_crs=TileCrs.gcj02)})
    with ThreadedServer(create_app(env.ctx)) as srv:
        d = driver_for(tmp_path)
        try:
            d.get(srv.url + "/#fleet")
            wait_view(d, "fleet")
            wait(lambda: d.find_element(By.ID, "map").get_attribute("data-mode") == "grid", what="grid after tile errors")
            assert "tiles unavailable" in d.find_element(By.ID, "map-mode").text
            assert "GCJ-02" in d.find_element(By.ID, "map-mode").text
            assert len(d.find_elements(By.CSS_SELECTOR, "#map path.vehicle")) == 3
            asked = d.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
            for path in ("/v1/latest/vehicles?", "/v1/vehicles/veh-01/track?", "/v1/geofences?"):  # (and the stream)
                assert any(path in u and "crs=gcj02" in u for u in asked), (path, asked)
            # the only console errors are the tiles that did not load
            errors = [e for e in d.get_log("browser") if e["level"] == "SEVERE" and dead not in e["message"]]
            assert errors == []
        finally:
            d.quit()


def test_a_viewer_key_within_its_rate_limit_sees_its_org_only(tmp_path):
    """With auth on the page asks for a key, keeps it, and sees the key's org only (a district
    viewer of 西湖区: its institution's building, not 拱墅区's); the rate limit's 429s (a burst of 8
    for the page's first requests) are waited out, so every view still loads."""
    from selenium.webdriver.common.by import By

    from tests.api.apienv import XIHU, build_env

    env = build_env(tmp_path, auth=True, rate_per_s=10.0, burst=8.0)
    _, token = env.keys.create(XIHU, "viewer")
    try:
        with ThreadedServer(create_app(env.ctx)) as srv:
            d = driver_for(tmp_path)
            try:
                d.get(srv.url + "/#energy")
                wait(lambda: d.find_element(By.ID, "login").is_displayed(), what="the key asked for")
                d.find_element(By.ID, "key-input").send_keys(token)
                d.find_element(By.ID, "key-save").click()
                wait_view(d, "energy", timeout_s=30)
                assert [c.get_attribute("data-building") for c in d.find_elements(By.CSS_SELECTOR, "#buildings .card")] == ["hq"]
                assert d.find_element(By.CSS_SELECTOR, "#scope a.here").text == "西湖区机关事务管理中心"
                d.get(srv.url + "/#fleet")
                wait_view(d, "fleet", timeout_s=30)
                assert [r.get_attribute("data-vehicle") for r in d.find_elements(By.CSS_SELECTOR, "#vehicle-table tbody tr")] == ["veh-01"]
                # another org in the address: the API's refusal, shown, no data
                d.get(srv.url + "/#energy?org=330000/330100/330105/inst-007")
                wait(lambda: d.find_element(By.ID, "problem").is_displayed(), what="refusal shown")
                assert "not within your key's org" in d.find_element(By.ID, "problem").text
                assert d.find_elements(By.CSS_SELECTOR, '#buildings .card[data-building="b7"]') == []
                severe = [e for e in d.get_log("browser") if e["level"] == "SEVERE"
                          and " 429 " not in e["message"] and " 401 " not in e["message"] and " 403 " not in e["message"]
                          and " 404 " not in e["message"]]
                assert severe == []
            finally:
                d.quit()
    finally:
        env.store.close()
        env.keys.close()
