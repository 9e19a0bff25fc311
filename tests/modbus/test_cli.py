from typer.testing import CliRunner

from collector.modbus.cli import app, profile_rows
from simulators.cli import meters_app


def test_profile_rows_list_every_shipped_profile_with_its_plan():
    rows = {r["id"]: r for r in profile_rows()}
    assert rows["chint-dtsu666"]["requests"] == 5 and rows["chint-dtsu666"]["registers"] == 23
    assert rows["tuf2000m-water"]["carrier"] == "water"


def test_profiles_show_prints_registers_and_plan():
    r = CliRunner().invoke(app, ["show", "EM340"], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    assert "CDAB" in r.output and "read plan: 3 requests per poll (naive: 13)" in r.output


def test_profiles_show_unknown_exits_2():
    r = CliRunner().invoke(app, ["show", "nope"])
    assert r.exit_code == 2 and "unknown profile" in r.output


def test_simulate_meters_runs_for_a_moment():
    r = CliRunner().invoke(meters_app, ["--count", "3", "--port", "0", "--for", "0.2", "--framer", "rtu"])
    assert r.exit_code == 0, r.output
    assert "serving 3 x chint-dtsu666 (rtu)" in r.output
