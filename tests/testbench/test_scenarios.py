"""Scenario files: the shipped ones load with the sizes the issue asks for; bad ones fail clearly."""

import pytest

from edge.app.site import compile_site
from edge.config import Outbox, Store
from edge.errors import ConfigError
from simulators.testbench.runner import build_site, plan_layout
from simulators.testbench.scenario import ChaosKind, load_scenario


@pytest.mark.parametrize(("name", "meters", "vehicles"), [("compound", 40, 20), ("county", 400, 200), ("stress", 2000, 1000)])
def test_shipped_scenarios_have_their_sizes(name, meters, vehicles):
    scn = load_scenario(name)
    assert (scn.meter_count, scn.vehicle_count) == (meters, vehicles)


def test_stress_polls_every_10_s_and_vehicles_report_at_1_hz():
    scn = load_scenario("stress")
    assert {g.interval_s for g in scn.meters} == {10} and {g.rate_hz for g in scn.vehicles} == {1.0}


def test_county_meters_share_a_few_ports_and_compile_as_a_site(tmp_path):
    layout = plan_layout(load_scenario("county"))
    servers = [s for proc in layout.servers for s in proc]
    assert len(servers) == 17 and sum(len(s["units"]) for s in servers) == 400
    ports = {(m.proc, m.server): 20000 + 100 * m.proc + m.server for m in layout.meters}
    site = build_site(layout, ports, name="t", store=Store(), outbox=Outbox(path=str(tmp_path / "o.sqlite")),
                      client_id="c", broker_url="mqtt://127.0.0.1:1883", api_port=0, shared_group="g")
    compiled = compile_site(site)
    assert len(compiled.site.meters) == 400 and len(compiled.site.vehicles) == 200
    assert compiled.site.mqtt.shared_group == "g"


def test_split_by_config_gives_each_meter_to_exactly_one_edge(tmp_path):
    layout = plan_layout(load_scenario("compound"))
    ports = {(m.proc, m.server): 20000 + m.server for m in layout.meters}
    ids = []
    for k in range(2):
        site = build_site(layout, ports, name="t", store=Store(), outbox=Outbox(), client_id=f"c{k}",
                          broker_url="mqtt://127.0.0.1:1883", api_port=0, meter_filter=lambda i, k=k: i % 2 == k)
        ids.append({m.id for m in site.meters})
    assert not ids[0] & ids[1] and len(ids[0] | ids[1]) == 40


def test_a_shorter_run_compresses_the_chaos_schedule():
    chaos = load_scenario("county").chaos
    short = chaos.scaled(0.1)
    outage = next(e for e in short.events if e.kind is ChaosKind.store_outage)
    assert (outage.at_s, outage.duration_s) == pytest.approx((12.0, 12.0))


def test_a_bad_scenario_names_file_and_field(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("name: bad\nmeters:\n  - {profile: chint-dtsu666, count: 0}\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*meters\.0\.count"):
        load_scenario(p)
    with pytest.raises(ConfigError, match="known: .*county"):
        load_scenario("nowhere")


def test_bench_cli_refuses_an_unknown_scenario_with_exit_2():
    from typer.testing import CliRunner

    from simulators.testbench_cli import app
    r = CliRunner().invoke(app, ["run", "nowhere"])
    assert r.exit_code == 2 and "no scenario 'nowhere'" in " ".join(r.output.split())  # rich wraps long paths
