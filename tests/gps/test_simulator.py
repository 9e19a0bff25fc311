"""The vehicle simulator: realistic driving, and payloads the collector's codecs read back."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from collector.gps.codecs import decoder_for
from simulators.payloads import FORMATS, Fix, encode, wire_time_ns
from simulators.vehicles import Faults, VehicleFleet

SH = timezone(timedelta(hours=8))


def t_ns(iso: str) -> int:
    return int(datetime.fromisoformat(iso).timestamp()) * 10**9


@pytest.mark.parametrize("fmt,version", [(f, 2013) for f in FORMATS] + [("jt808", 2019)])
def test_simulator_payloads_decode_to_what_was_sent(fmt, version):
    vid = "13800000042" if fmt == "jt808" else "veh-0042"
    f = Fix(vid, t_ns("2026-11-25T09:15:30+08:00") + 123_000_000, 30.2741234, 120.1551234, 43.2, 271.0, True,
            12345.67, 33.3, 9.0, 12)
    [p] = decoder_for(fmt)(encode(fmt, f, jt808_version=version), vehicle=vid, now_ns=f.time_ns)
    exp_id = vid if fmt != "owntracks" else vid
    assert p.tags["vehicle"] == exp_id
    assert p.time_ns == wire_time_ns(fmt, f.time_ns)
    assert p.fields["lat"] == pytest.approx(f.lat, abs=1.5e-6) and p.fields["lon"] == pytest.approx(f.lon, abs=1.5e-6)
    assert p.fields["speed_kmh"] == pytest.approx(43.2, abs=0.6)
    if fmt in ("json", "jt808"):
        assert p.fields["acc"] is True and p.fields["odometer_km"] == pytest.approx(12345.67, abs=0.06)


def run_day(fleet: VehicleFleet, start_iso: str, hours: float, dt: float = 5.0) -> list:
    t0 = t_ns(start_iso)
    out = []
    for k in range(int(hours * 3600 / dt)):
        t = t0 + int(k * dt * 1e9)
        fleet.tick_messages(t, dt)
        out.append([(c.acc, c.speed, c.parked, c.node) for c in fleet.cars])
    return out


def test_fleet_drives_on_a_working_day_and_sleeps_at_night():
    fleet = VehicleFleet(20, "mqtt://127.0.0.1:1", seed=1, faults=Faults(gap_rate=0))
    day = run_day(fleet, "2026-11-25T07:30:00+08:00", 4)  # a Wednesday morning
    moving = [sum(1 for acc, sp, pk, _ in tick if sp > 0) for tick in day]
    assert max(moving) >= 5  # most of the fleet is out mid-morning
    speeds = [sp for tick in day for _, sp, _, _ in tick if sp > 0]
    assert 20 < sum(speeds) / len(speeds) < 80 and max(speeds) <= 80.5
    assert any(not acc for tick in day[-50:] for acc, _, _, _ in tick)  # someone parked with ACC off
    night = VehicleFleet(20, "mqtt://127.0.0.1:1", seed=2, faults=Faults(gap_rate=0))
    nights = run_day(night, "2026-11-25T23:00:00+08:00", 3)
    on = [sum(1 for acc, _, _, _ in tick if acc) for tick in nights]
    assert sum(on) / len(on) < 1.5  # nights: parked, ACC off, but for the odd off-hours trip


def test_fleet_rests_on_a_statutory_holiday():
    fleet = VehicleFleet(20, "mqtt://127.0.0.1:1", seed=1, faults=Faults(gap_rate=0))
    day = run_day(fleet, "2026-10-01T08:00:00+08:00", 3)  # National Day
    moving = max(sum(1 for _, sp, _, _ in tick if sp > 0) for tick in day)
    assert moving <= 3


def test_faults_on_demand_are_counted_exactly():
    fleet = VehicleFleet(10, "mqtt://127.0.0.1:1", seed=1, faults=Faults(gap_rate=0))
    fleet.inject("malformed", 3)
    fleet.inject("duplicate", 2)
    msgs = fleet.tick_messages(t_ns("2026-11-25T10:00:00+08:00"), 1.0)
    st = fleet.stats()
    assert st["malformed"] == 3 and st["duplicates"] == 2
    assert len(msgs) == 10 + 2 and st["positions"] == 7
    for _, bad in st["malformed_payloads"]:
        with pytest.raises(Exception) as e:
            decoder_for("json")(bad, vehicle="x")
        assert type(e.value).__name__ == "PayloadError"


@pytest.mark.mosquitto
def test_cli_simulate_vehicles_publishes_jt808(mosquitto):
    import json

    from typer.testing import CliRunner

    from simulators.vehicles_cli import app

    r = CliRunner().invoke(app, ["--count", "5", "--format", "jt808", "--broker", mosquitto.url,
                                 "--rate-hz", "1", "--duration-s", "2"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["format"] == "jt808" and out["messages"] == 10
    from edge.app.cli import app as edge_app  # as the lead mounts it: edge simulate vehicles ...

    h = CliRunner().invoke(edge_app, ["simulate", "vehicles", "--help"])
    assert h.exit_code == 0 and "--count" in h.output and "--format" in h.output


def test_tick_records_say_what_each_message_is():
    fleet = VehicleFleet(10, "mqtt://127.0.0.1:1", seed=4,
                         faults=Faults(gap_rate=0, malformed_rate=0.2, duplicate_rate=0.2, out_of_order_rate=0.2))
    recs = []
    for k in range(5):
        recs += fleet.tick_records(t_ns("2026-11-25T10:00:00+08:00") + k * 10**9, 1.0)
    st = fleet.stats()
    kinds = {r.kind for r in recs}
    assert kinds == {"position", "late", "duplicate", "malformed"}
    good = sorted((r.vehicle, r.time_ns) for r in recs if r.kind in ("position", "late"))
    assert good == sorted((v, t) for v, ts in st["per_vehicle"].items() for t in ts)
    assert sum(r.kind == "malformed" for r in recs) == st["malformed"]
