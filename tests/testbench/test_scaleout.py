"""Scale-out end to end: two edge processes share one fleet through an MQTT shared subscription
and split the meters by configuration. Every position of the backlog is stored once: none lost,
none taken by both edges, and both edges did part of the work."""

import pytest

from simulators.testbench.scaleout import measure, scaleout_scenario

pytestmark = [pytest.mark.influxdb, pytest.mark.mosquitto, pytest.mark.slow, pytest.mark.timeout(200)]


def test_two_edges_share_the_fleet_without_loss_or_doubles(needs_influxd_and_mosquitto, tmp_path):
    scn = scaleout_scenario(vehicles=40, meters=6)
    two = measure(2, tmp_path / "two", ticks=15, scn=scn)
    assert two["positions"] == 40 * 15
    assert sum(two["per_edge"]) == two["positions"], two["per_edge"]  # nobody stored a position twice
    assert all(n > 0 for n in two["per_edge"]), two["per_edge"]       # the broker shared the group
    acc = two["accounting"]
    assert acc["unexplained"] == 0, acc
    assert acc["positions"]["duplicated"] == 0 and acc["meters"]["duplicated"] == 0
    assert sorted(two["meters_per_edge"]) == [3, 3]                    # meters split by configuration
    assert set(two["cpu_s"]) >= {"edge-0", "edge-1", "mosquitto", "influxd"}


def test_cpu_budget_holds_a_process_in_its_own_cgroup_and_lets_it_go():
    import subprocess
    import sys

    from simulators.testbench.scaleout import CPU_CGROUP_ROOT, cpu_budget, cpu_budget_available
    why = cpu_budget_available()
    if why:
        pytest.skip(why)
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        group = CPU_CGROUP_ROOT / f"sensing-edge-bench-{proc.pid}"
        with cpu_budget([proc.pid], 0.5):
            assert (group / "cpu.cfs_quota_us").read_text().strip() == "50000"
            assert str(proc.pid) in (group / "cgroup.procs").read_text().split()
        assert not group.exists()  # released: back in the root group, the cgroup removed
    finally:
        proc.kill()
        proc.wait()
