"""A short compound run with chaos, end to end: real influxd, Mosquitto, simulator processes and
the edge as a process that is kill -9'd and restarted; it must reconcile to zero unexplained loss."""

import pytest

from simulators.testbench.runner import run_scenario

pytestmark = [pytest.mark.influxdb, pytest.mark.mosquitto, pytest.mark.slow, pytest.mark.timeout(150)]


def test_short_compound_with_chaos_loses_nothing_unexplained(short_compound, tmp_path):
    report = run_scenario(short_compound, tmp_path / "run")
    acc = report["accounting"]
    events = [e["event"] for e in report["events"]]
    assert {"edge kill -9", "edge restart", "influxdb stop", "influxdb start", "mosquitto restart"} <= set(events)
    summary = {k: v for k, v in report.items() if k != "samples"}
    assert report["drained"], summary
    assert acc["unexplained"] == 0, summary
    assert acc["verdict"] == "zero unexplained loss"
    # the run really moved data through every fault
    # (how many meter readings survive the 16 kB quota's thinning depends on how fast the machine drains:
    # what was sent is the measure, and some of it stored)
    assert acc["meters"]["sent"] > 20 and acc["meters"]["stored"] > 0 and acc["positions"]["stored"] > 100, summary
    assert max(s["depth"] for s in report["samples"]) > 0  # points buffered in the outbox through the outage
    assert report["dead_letters"]["payloads"] > 0  # the malformed payloads were dead-lettered, not stored
    assert report["edge"]["kills"] == 1
    # the outage overflowed the 16 kB quota: positions were held back (not acknowledged, delivered
    # later), none dropped; meter readings thinned or dropped, each one recorded, so every one lost is
    # explained by its identity (above: zero unexplained), and no meter's energy changed by thinning
    full = report["outbox_full"]
    assert full["held_back"] > 0 and full["recorded"]["positions"] == 0 and acc["positions_dropped"] == 0, summary
    assert full["thinned"] + full["dropped"] == full["recorded"]["meter_readings"] > 0, summary
    assert report["energy"]["changed"] == 0, summary
