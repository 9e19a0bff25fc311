"""The first ten minutes (issue 18): `edge demo` as a newcomer runs it (a district with 400 days of
history, then live), and every view of its dashboard in Debian's headless Chromium: the district's
ranking ordered, a street office's institutions, an institution's cards all filled, a year of
energy against the baseline with the savings, the items, the fleet on the map with every vehicle
and today's tracks; no console errors. Screenshots go to tests/artifacts/dashboard-demo-*.png
(the README's are made from them: ``python -m tests.support.screenshots``)."""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from tests.support.browser import ARTIFACTS, driver_for, full_page_screenshot, needs_browser, severe, wait, wait_view

pytestmark = [*needs_browser, pytest.mark.slow]

DISTRICT = "330000/330100/330106"
STREET = f"{DISTRICT}/330106004"
CENTRE = f"{DISTRICT}/inst-042"
CLINIC = f"{STREET}/inst-102"


def number(text: str) -> float:
    m = re.search(r"[-+]?[0-9][0-9,]*\.?[0-9]*", text)
    assert m, text
    return float(m.group(0).replace(",", ""))


def get(url: str):
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """`edge demo --days 400` on a free port, until its API answers and the live passes have written
    today's energy and fleet rows; stopped with SIGTERM as Ctrl-C would."""
    data = tmp_path_factory.mktemp("demo")
    edge = Path(sys.executable).with_name("edge")
    cmd = [str(edge)] if edge.exists() else [sys.executable, "-m", "edge.app.cli"]
    err = open(data / "stderr.txt", "w+", encoding="utf-8")
    proc = subprocess.Popen(cmd + ["demo", "--days", "400", "--port", "0", "--data-dir", str(data / "var")],
                            stdout=subprocess.DEVNULL, stderr=err, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        url = None
        deadline = time.monotonic() + 240
        while url is None and time.monotonic() < deadline and proc.poll() is None:
            err.seek(0)
            m = re.search(r"API (http://127\.0\.0\.1:\d+)/docs", err.read())
            url = m.group(1) if m else None
            time.sleep(0.5)
        err.seek(0)
        assert url, f"the demo did not announce its API: {err.read()[-3000:]}"
        today = dt.datetime.now(dt.timezone(dt.timedelta(hours=8))).date().isoformat()
        wait(lambda: get(f"{url}/v1/indicators/energy?scope=building&period=day&from={today}")["items"]
             and get(f"{url}/v1/indicators/fleet?scope=org&period=day&from={today}")["items"], 60, "today's rows")
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        err.close()


def test_every_view_of_the_demo_with_a_year_of_history(demo, tmp_path):
    from selenium.webdriver.common.by import By

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    local_today = dt.datetime.now(dt.timezone(dt.timedelta(hours=8))).date()
    d = driver_for(tmp_path)
    try:
        # the province's view walks down to the district (one city, one district), ranked by kWh/m²
        d.get(demo + "/")
        wait_view(d, "district", 40)
        assert d.find_element(By.CSS_SELECTOR, "#scope a.here").text == "西湖区"
        rows = d.find_elements(By.CSS_SELECTOR, "#rollup-table tbody tr")
        assert [r.get_attribute("data-org") for r in rows] and {r.get_attribute("data-org") for r in rows} == {STREET, CENTRE, f"{DISTRICT}/inst-043"}
        per_m2 = [number(r.find_element(By.CSS_SELECTOR, 'td[data-field="kwh_per_m2"]').text) for r in rows]
        assert per_m2 == sorted(per_m2, reverse=True) and per_m2[-1] > 0            # highest first
        assert [r.get_attribute("data-rank") for r in rows] == ["1", "2", "3"]
        for card in d.find_elements(By.CSS_SELECTOR, "#view-district .summary .card"):
            assert "—" not in card.find_element(By.CSS_SELECTOR, ".big").text, card.text
        assert re.search(r"(saved|over by) [0-9,]+ kWh", d.find_element(By.ID, "total-savings").text)  # a month with a baseline
        full_page_screenshot(d, ARTIFACTS / "dashboard-demo-district.png")
        # ranked the other way round
        d.find_element(By.CSS_SELECTOR, 'th[data-sort="kwh_per_m2"] a').click()
        wait(lambda: "▲" in d.find_element(By.CSS_SELECTOR, 'th[data-sort="kwh_per_m2"]').text, what="ascending")
        wait_view(d, "district")
        asc = [number(r.find_element(By.CSS_SELECTOR, 'td[data-field="kwh_per_m2"]').text)
               for r in d.find_elements(By.CSS_SELECTOR, "#rollup-table tbody tr")]
        assert asc == sorted(per_m2)

        # down to the street office's ranking, and its clinic's energy view: every card holds a value
        d.find_element(By.CSS_SELECTOR, f'#rollup-table tr[data-org="{STREET}"] a.inst').click()
        wait(lambda: f"#district?org={STREET}" in d.current_url, what="the street's ranking")
        wait_view(d, "district")
        assert {r.get_attribute("data-org") for r in d.find_elements(By.CSS_SELECTOR, "#rollup-table tbody tr")} == {
            f"{STREET}/inst-101", CLINIC}
        d.find_element(By.CSS_SELECTOR, f'#rollup-table tr[data-org="{CLINIC}"] a.inst').click()
        wait_view(d, "energy", 40)
        card = d.find_element(By.CSS_SELECTOR, '#buildings .card[data-building="clinic"]')
        for dd in card.find_elements(By.CSS_SELECTOR, "dd"):
            if dd.get_attribute("id") == "month-clinic" and local_today.day == 1:
                continue   # the month's row covers closed days: none on the 1st
            assert "—" not in dd.text, (dd.get_attribute("id"), dd.text)
        assert number(d.find_element(By.ID, "power-clinic").text) > 0
        assert re.search(r"(saved|over by) [0-9,]+ kWh", d.find_element(By.ID, "last-savings-clinic").text)

        # the institution with two buildings: a year of energy against the baseline, by item
        d.get(f"{demo}/#energy?org={CENTRE}")
        wait_view(d, "energy", 40)
        assert [c.get_attribute("data-building") for c in d.find_elements(By.CSS_SELECTOR, "#buildings .card")] == ["hq", "hq-annex"]
        chart = d.find_element(By.ID, "chart-energy")
        assert chart.get_attribute("data-unit") == "kWh per month" and chart.get_attribute("data-buckets") == "12"
        assert int(chart.get_attribute("data-values")) >= 12 + 2        # a year of months, and baselines
        assert re.search(r"(saved|over by) [0-9,]+ kWh", d.find_element(By.ID, "chart-savings").text)
        assert int(d.find_element(By.ID, "chart-items").get_attribute("data-values")) >= 4 * 11
        full_page_screenshot(d, ARTIFACTS / "dashboard-demo-energy.png")
        d.find_element(By.CSS_SELECTOR, '#charts a[data-range="month"]').click()
        wait(lambda: d.find_element(By.ID, "chart-energy").get_attribute("data-unit") == "kWh per day", what="a month")
        assert d.find_element(By.ID, "chart-energy").get_attribute("data-buckets") == "30"
        d.find_element(By.CSS_SELECTOR, '#charts a[data-range="day"]').click()
        wait(lambda: d.find_element(By.ID, "chart-energy").get_attribute("data-unit") == "kWh per hour", what="a day")

        # the district's fleet: every vehicle on the map (a grid: the demo has no tiles), today's tracks
        d.get(f"{demo}/#fleet?org={DISTRICT}")
        wait_view(d, "fleet", 40)
        wait(lambda: len(d.find_elements(By.CSS_SELECTOR, "#map path.vehicle")) == 20, what="20 vehicles on the map")
        # today's tracks as the API holds them: at 02:00 the vehicles have barely moved, at 15:00 most have
        since = dt.datetime.combine(local_today, dt.time(), dt.timezone(dt.timedelta(hours=8))).isoformat()
        went_km = 0.0
        for v in get(f"{demo}/v1/vehicles?org={DISTRICT}&limit=100")["items"]:
            fixes = get(f"{demo}/v1/vehicles/{v['id']}/track?" + urllib.parse.urlencode({"from": since, "limit": 1000}))["items"]
            if fixes:
                lat, lon = [f["lat"] for f in fixes], [f["lon"] for f in fixes]
                went_km = max(went_km, 111.2 * math.hypot(max(lat) - min(lat), (max(lon) - min(lon)) * math.cos(math.radians(lat[0]))))
        tracks = d.find_elements(By.CSS_SELECTOR, "#map path.track")
        assert len(tracks) >= 1
        if went_km > 2:   # a vehicle that went somewhere today is drawn as a line through several points, not a dot
            vertices = max(len(set(re.findall(r"[ML]\s*(-?[0-9.]+)[ ,](-?[0-9.]+)", t.get_attribute("d") or ""))) for t in tracks)
            assert vertices >= 3, (went_km, [t.get_attribute("d") for t in tracks])
        assert d.find_element(By.ID, "map").get_attribute("data-mode") == "grid"
        assert len(d.find_elements(By.CSS_SELECTOR, "#vehicle-table tbody tr")) == 20
        # every card holds a value, but utilisation before the working day starts (or on a day off), which has
        # no working time to divide by: the API says null there, and the card a dash
        day = get(f"{demo}/v1/indicators/fleet?scope=org&id={DISTRICT}&period=day&from={local_today}")["items"][-1]["values"]
        for sel, field in (("#fleet-dispatch .big", "dispatch_rate"), ("#fleet-utilisation .big", "utilisation"),
                           ("#fleet-trips .big", "trips"), ("#fleet-holiday .big", None)):
            shown = d.find_element(By.CSS_SELECTOR, sel).text
            assert ("—" in shown) == (field is not None and day.get(field) is None), (sel, shown, field and day.get(field))
        full_page_screenshot(d, ARTIFACTS / "dashboard-demo-fleet.png")
        assert severe(d) == []
    finally:
        d.quit()
