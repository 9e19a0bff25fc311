"""``edge analytics track FILE`` on the three formats, and the readers against independent parsers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pynmea2
import pytest
from typer.testing import CliRunner

from analytics.fleet.cli import app
from analytics.fleet.trackfiles import TrackFileError, read_track
from analytics.fleet.tracks import NS

DATA = Path(__file__).parent / "data"


def run_json(*args):
    r = CliRunner().invoke(app, ["track", *map(str, args), "--json"])
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def test_track_on_a_real_gpx_file():
    doc = run_json(DATA / "munich_car_1hz.gpx")
    assert doc["format"] == "gpx" and doc["rows"] == 1194
    (v,) = doc["vehicles"]
    assert v["fixes"] == 1194 and len(v["trips"]) == 1
    assert v["driven_km"] == pytest.approx(13.67, rel=0.02) and v["unobserved_km"] == 0.0
    assert v["trips"][0]["max_speed_kmh"] < 150


def test_track_on_a_csv_of_several_vehicles(tmp_path):
    doc = run_json(DATA / "gotrack_rides.csv")
    assert doc["format"] == "csv"
    names = [v["vehicle"] for v in doc["vehicles"]]
    assert "gotrack-131" in names and len(names) == 11
    v131 = next(v for v in doc["vehicles"] if v["vehicle"] == "gotrack-131")
    assert v131["dropped"] == {"cold_start": 2}  # the stale fixes after two signal gaps (SOURCES.md)


def test_track_csv_with_speed_odometer_and_acc_compares_the_odometer(tmp_path):
    t0 = 1_760_400_000
    rows = ["time,lat,lon,speed_kmh,odometer_km,acc"]
    for i in range(60):  # parked 10 min
        rows.append(f"{t0 + i * 10},30.274100,120.155100,0,1000.0,0")
    for i in range(1, 181):  # 30 min at 36 km/h east, odometer 8 % fast
        rows.append(f"{t0 + 600 + i * 10},30.274100,{120.1551 + i * 100 / 96_000:.7f},36,{1000 + i * 0.108:.1f},1")
    for i in range(1, 61):
        rows.append(f"{t0 + 2400 + i * 10},30.274100,{120.1551 + 180 * 100 / 96_000:.7f},0,{1000 + 180 * 0.108:.1f},0")
    f = tmp_path / "car.csv"
    f.write_text("\n".join(rows) + "\n")
    (v,) = run_json(f)["vehicles"]
    (trip,) = v["trips"]
    assert trip["method"] == "acc"
    assert trip["odometer_km"] == pytest.approx(19.4, abs=0.2) and trip["odometer_mismatch"] is True
    assert v["odometer_mismatch"] is True


def test_track_on_a_real_nmea_log_agrees_with_pynmea2():
    path = DATA / "gpsd_haicom-305N.log"
    tracks, rep = read_track(path)
    ref = []
    for line in path.read_text().splitlines():
        if "RMC," not in line or line.startswith("#"):
            continue
        m = pynmea2.parse(line.strip())
        if m.status == "A":
            ref.append((m.datetime.timestamp(), m.latitude, m.longitude, float(m.spd_over_grnd or 0) * 1.852))
    assert rep.format == "nmea" and len(tracks) == len(ref) > 0
    ref = np.array(ref)
    assert np.allclose(tracks.t_ns / NS, ref[:, 0], atol=1e-3)
    assert np.allclose(tracks.lat, ref[:, 1], atol=1e-9) and np.allclose(tracks.lon, ref[:, 2], atol=1e-9)
    assert np.allclose(tracks.speed_kmh, ref[:, 3], atol=1e-9)
    assert rep.skipped.get("no_fix", 0) == rep.rows - len(ref)
    doc = run_json(path)
    assert doc["format"] == "nmea" and doc["vehicles"][0]["fixes"] == len(ref)


def test_nmea_with_two_talkers_and_a_bad_checksum(tmp_path):
    text = (DATA / "gpsd_nmea-rtk.log").read_text()
    tracks, rep = read_track(text, "nmea")
    assert len(tracks) > 100 and tracks.satellites.max() > 3  # GGA satellites joined by time
    broken = text.replace("$GPRMC", "$GPRMC", 1)
    i = broken.index("$GPRMC")
    j = broken.index("*", i)
    broken = broken[:j + 1] + "00" + broken[j + 3:]
    _, rep2 = read_track(broken, "nmea")
    assert rep2.skipped.get("bad_checksum", 0) == 1


def test_a_file_with_no_fix_is_an_error_not_a_crash(tmp_path):
    f = tmp_path / "empty.csv"
    f.write_text("time,lat,lon\nnot-a-time,30,120\n")
    r = CliRunner().invoke(app, ["track", str(f)])
    assert r.exit_code == 1 and "no usable fix" in r.output
    with pytest.raises(TrackFileError, match="lacks lat"):
        read_track("time,x,lon\n1,2,3\n", "csv")


def test_track_table_output_names_driven_and_unobserved():
    r = CliRunner().invoke(app, ["track", str(DATA / "munich_car_1hz.gpx")])
    assert r.exit_code == 0, r.output
    assert "driven 13." in r.output and "unobserved 0.000 km" in r.output and "trips" in r.output
