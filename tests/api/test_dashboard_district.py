"""The dashboard over a district with a year of history written in seconds (tests/api/district.py:
the demo district's 4 institutions in two levels, 5 buildings, 30 meters, 20 vehicles, 400 days in
the analytics' shapes) behind the real API and roll-up, in a real headless Chromium: the ranking is
ordered and re-ranked, links down through the street office to an institution, every card of its
energy view holds a value, the charts read a year against the baseline and change with the range
picker, and the fleet map draws every vehicle, tracks and geofences. No console errors. The demo
itself: tests/api/test_dashboard_demo.py. Screenshots: tests/artifacts/dashboard-fixture-*.png."""

from __future__ import annotations

import datetime as dt
import re

import pytest

from api.app import create_app
from tests.api import district
from tests.api.apienv import ThreadedServer
from tests.support.browser import ARTIFACTS, driver_for, full_page_screenshot, needs_browser, severe, wait, wait_view

pytestmark = needs_browser


def number(text: str) -> float:
    m = re.search(r"[-+]?[0-9][0-9,]*\.?[0-9]*", text)
    assert m, text
    return float(m.group(0).replace(",", ""))


@pytest.fixture
def site_with_history(tmp_path):
    dist = district.build(tmp_path)
    with ThreadedServer(create_app(dist.ctx)) as srv:
        yield dist, srv
    dist.close()


def test_district_ranking_links_down_to_an_institution_with_a_year_of_indicators(site_with_history, tmp_path):
    from selenium.webdriver.common.by import By

    dist, srv = site_with_history
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    d = driver_for(tmp_path)

    def ranked(field: str) -> list[float]:
        return [number(r.find_element(By.CSS_SELECTOR, f'td[data-field="{field}"]').text)
                for r in d.find_elements(By.CSS_SELECTOR, "#rollup-table tbody tr")]
    try:
        # a province's user lands on the district (西湖区: the tree's single way down)
        d.get(srv.url + "/")
        wait_view(d, "district")
        assert d.find_element(By.CSS_SELECTOR, "#scope a.here").text == "西湖区"
        rows = d.find_elements(By.CSS_SELECTOR, "#rollup-table tbody tr")
        assert sorted(r.get_attribute("data-org") for r in rows) == sorted([district.CENTRE, district.STREET, district.EDU])
        per_m2 = ranked("kwh_per_m2")
        assert per_m2 == sorted(per_m2, reverse=True) and per_m2[-1] > 0          # ranked by kWh/m², highest first
        for card in d.find_elements(By.CSS_SELECTOR, "#view-district .summary .card .big"):
            assert "—" not in card.text, card.text
        assert re.search(r"(saved|over by) [0-9,]+ kWh", d.find_element(By.ID, "total-savings").text)
        # ranked by 出车率 instead, lowest first
        d.find_element(By.CSS_SELECTOR, 'th[data-sort="dispatch_rate"] a').click()
        wait(lambda: d.find_element(By.CSS_SELECTOR, "th.sorted").get_attribute("data-sort") == "dispatch_rate", what="re-ranked")
        wait_view(d, "district")
        d.find_element(By.CSS_SELECTOR, 'th[data-sort="dispatch_rate"] a').click()
        wait(lambda: "▲" in d.find_element(By.CSS_SELECTOR, "th.sorted").text, what="lowest first")
        wait_view(d, "district")
        rates = ranked("dispatch_rate")
        assert rates == sorted(rates)
        d.find_element(By.CSS_SELECTOR, 'th[data-sort="kwh_per_m2"] a').click()
        wait(lambda: d.find_element(By.CSS_SELECTOR, "th.sorted").get_attribute("data-sort") == "kwh_per_m2", what="re-ranked")
        wait_view(d, "district")
        full_page_screenshot(d, ARTIFACTS / "dashboard-fixture-district.png")

        # down through the street office to its clinic, the hungriest for its area
        d.find_element(By.CSS_SELECTOR, f'#rollup-table tr[data-org="{district.STREET}"] a.inst').click()
        wait(lambda: f"#district?org={district.STREET}" in d.current_url, what="the street's ranking")
        wait_view(d, "district")
        rows = d.find_elements(By.CSS_SELECTOR, "#rollup-table tbody tr")
        assert [r.get_attribute("data-org") for r in rows] == [district.CLINIC, district.OFFICE]
        rows[0].find_element(By.CSS_SELECTOR, "a.inst").click()
        wait(lambda: f"#energy?org={district.CLINIC}" in d.current_url, what="link down")
        wait_view(d, "energy")
        assert [a.text for a in d.find_elements(By.CSS_SELECTOR, "#scope a")] == [
            "浙江省", "杭州市", "西湖区", "北山街道", "北山街道社区卫生服务中心"]
        cards = d.find_elements(By.CSS_SELECTOR, "#buildings .card")
        assert [c.get_attribute("data-building") for c in cards] == ["clinic"]
        first_of_month = dt.datetime.fromtimestamp(dist.now_ns / 1e9, district.TZ).day == 1
        for dd in cards[0].find_elements(By.CSS_SELECTOR, "dd"):    # every card holds a value
            if first_of_month and dd.get_attribute("id") in ("month-clinic", "savings-clinic"):
                continue                                            # no closed day this month yet
            assert "—" not in dd.text, (dd.get_attribute("id"), dd.text)
        assert "over by" in d.find_element(By.ID, "last-savings-clinic").text   # this one consumes above its baseline
        assert number(d.find_element(By.ID, "ytd-clinic").text) > 0 and "of 70 kWh/m²" in d.find_element(By.ID, "quota-clinic").text
        # a year against the baseline: 12 months, the reporting ones compared, the rest the model's fit
        wait(lambda: d.find_element(By.ID, "chart-energy").get_attribute("data-buckets") == "12", what="year chart")
        assert d.find_element(By.ID, "chart-energy").get_attribute("data-unit") == "kWh per month"
        assert int(d.find_element(By.ID, "chart-energy").get_attribute("data-values")) >= 12 + 11
        assert re.search(r"over by [0-9,]+ kWh \([0-9.]+ %\) ± [0-9,]+", d.find_element(By.ID, "chart-savings").text)
        assert int(d.find_element(By.ID, "chart-items").get_attribute("data-values")) >= 4 * 12
        full_page_screenshot(d, ARTIFACTS / "dashboard-fixture-energy.png")
        # the range picker: a month by day, with the anomalous day; a day by hour
        d.find_element(By.CSS_SELECTOR, '#charts a[data-range="month"]').click()
        wait(lambda: d.find_element(By.ID, "chart-energy").get_attribute("data-unit") == "kWh per day", what="month")
        assert d.find_element(By.ID, "chart-energy").get_attribute("data-buckets") == "30"
        assert "1 anomalous days" in d.find_element(By.ID, "charts").text
        d.find_element(By.CSS_SELECTOR, '#charts a[data-range="day"]').click()
        wait(lambda: d.find_element(By.ID, "chart-energy").get_attribute("data-unit") == "kWh per hour", what="day")
        assert int(d.find_element(By.ID, "chart-energy").get_attribute("data-values")) >= 1

        # the clinic's fleet: its 3 vehicles; then up to the district's: all 20, today's tracks, the geofences
        d.find_element(By.ID, "tab-fleet").click()
        wait_view(d, "fleet")
        wait(lambda: len(d.find_elements(By.CSS_SELECTOR, "#map path.vehicle")) == 3, what="the clinic's 3 vehicles")
        d.find_element(By.CSS_SELECTOR, "#scope a[data-org='330000/330100/330106']").click()
        wait(lambda: "#fleet?org=330000/330100/330106" in d.current_url, what="up to the district")
        wait_view(d, "fleet")
        wait(lambda: len(d.find_elements(By.CSS_SELECTOR, "#map path.vehicle")) == 20, what="20 vehicle markers")
        tracks = d.find_elements(By.CSS_SELECTOR, "#map path.track")
        assert len(tracks) == 20 and len(d.find_elements(By.CSS_SELECTOR, "#map path.trip")) >= 1
        assert all(len(t.get_attribute("d") or "") > 20 for t in tracks[:3])
        assert len(d.find_elements(By.CSS_SELECTOR, "#map .leaflet-overlay-pane path")) >= 20 + 20 + 5  # + geofences
        assert len(d.find_elements(By.CSS_SELECTOR, "#vehicle-table tbody tr")) == 20
        for card in d.find_elements(By.CSS_SELECTOR, "#fleet-summary .card .big"):
            assert "—" not in card.text, card.text
        assert number(d.find_element(By.CSS_SELECTOR, "#fleet-dispatch .big").text) == pytest.approx(95, abs=0.5)
        full_page_screenshot(d, ARTIFACTS / "dashboard-fixture-fleet.png")
        # a trip's row shows it on the map
        d.find_element(By.CSS_SELECTOR, "#trip-table tbody tr.clickable").click()
        wait(lambda: d.find_elements(By.CSS_SELECTOR, "#trip-table tbody tr.on"), what="trip shown")
        assert d.find_elements(By.CSS_SELECTOR, '#map path.trip[stroke="#e8731a"]')
        assert severe(d) == []
    finally:
        d.quit()
