"""Bench figures of the test bench (issue 10): county with chaos, stress, scale-out, soak.

Durations (full run, about 12 minutes; ``quick`` about 2 minutes):

* ``bench.county_lost``: the ``county`` scenario with its chaos schedule, 300 s (env
  ``BENCH_COUNTY_S``) plus the drain; quick: ``compound``, 40 s, schedule compressed.
* ``bench.county_positions_dropped``, ``bench.county_energy_changed``: from the same run, with its
  2 MB outbox quota overflowed by the store outage: positions the outbox dropped (its record of
  drops; goal 0: held back, not dropped) and the meter-days whose energy the thinned readings
  change (goal 0).
* ``bench.stress_cpu_cores`` / ``bench.stress_rss_mb``: ``stress`` without chaos, 120 s
  (``BENCH_STRESS_S``); skipped when quick.
* ``bench.scaleout_ratio``: two edges vs one on a backlog of 500 vehicles x 120 positions
  (``BENCH_SCALEOUT_TICKS``); quick: 100 x 20.
* ``bench.soak_mem_growth_pct``: ``county`` for 1800 s (``BENCH_SOAK_S``), only with ``BENCH_SOAK=1`` (without it
  the last soak's figure stays in results.json, with its ``measured_at``).

``BENCH_PARTS=county,stress,scaleout,soak`` runs only the parts named (figures merge into results.json).

Plots go to ``bench/scenario_<name>.png`` and reconciliation tables to ``bench/scenario_<name>.md``; full reports to ``var/bench/<name>/report.json``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WORK = ROOT / "var" / "bench"


def _env(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


def _null(why: str, unit: str, goal: str) -> dict:
    return {"value": None, "why": why, "unit": unit, "baseline": None, "ratio": None, "goal": goal, "met": None}


def run(quick: bool = False) -> dict:
    """Every figure; a part that fails records its figures as null with the error, the others still run."""
    figs: dict[str, dict] = {}
    summaries: list[str] = []
    parts = [("county", ("bench.county_lost", "bench.county_positions_dropped", "bench.county_energy_changed"), _county),
             ("stress", ("bench.stress_cpu_cores", "bench.stress_rss_mb"), _stress),
             ("scaleout", ("bench.scaleout_ratio", "bench.scaleout_ratio_equal_cpu"), _scaleout), ("soak", ("bench.soak_mem_growth_pct",), _soak)]
    only = {p for p in os.environ.get("BENCH_PARTS", "").split(",") if p}
    for name, names, fn in parts:
        if only and name not in only:
            continue
        before = len(summaries)
        try:
            fn(quick, figs, summaries)
        except Exception as e:  # noqa: BLE001  (one failed part never hides the others)
            import traceback
            traceback.print_exc()
            for n in names:
                figs[n] = _null(f"{name} run failed: {type(e).__name__}: {e}", "", "")
        if len(summaries) > before:
            (HERE / f"scenario_{name}.md").write_text("# Test bench: " + name + "\n\n" + "\n".join(summaries[before:]))
    return figs


def _county(quick: bool, figs: dict, summaries: list) -> None:
    from simulators.testbench.report import markdown, plot
    from simulators.testbench.runner import run_scenario
    from simulators.testbench.scenario import load_scenario

    # county with chaos (quick: a compressed compound)
    name, dur = ("compound", 40.0) if quick else ("county", _env("BENCH_COUNTY_S", 300.0))
    rep = run_scenario(load_scenario(name), WORK / name, duration_s=dur, chaos=True)
    plot(rep, HERE / f"scenario_{name}.png")
    summaries.append(markdown(rep))
    acc = rep["accounting"]
    figs["bench.county_lost"] = {
        "value": acc["unexplained"], "unit": "readings+positions lost, unexplained",
        "baseline": None, "baseline_what": "none (absolute goal)", "ratio": None, "goal": "0", "met": acc["unexplained"] == 0,
        "scenario": f"{name}, {dur:.0f} s, chaos on" + (" (quick: compound stands in for county)" if quick else ""),
        "sent": acc["meters"]["sent"] + acc["positions"]["sent"],
        "stored": acc["meters"]["stored"] + acc["positions"]["stored"],
        "lost": acc["meters"]["lost"] + acc["positions"]["lost"],
        "outbox_dropped": acc["outbox_dropped"], "late": acc["meters"]["late"] + acc["positions"]["late"],
        "duplicated": acc["meters"]["duplicated"] + acc["positions"]["duplicated"],
        "explained": {k: v for src in ("meters", "positions") for k, v in acc[src]["explained"].items() if v},
        "report": str(WORK / name / "report.json"),
    }
    full, energy = rep["outbox_full"], rep["energy"]
    scenario = figs["bench.county_lost"]["scenario"]
    figs["bench.county_positions_dropped"] = {
        "value": acc["positions_dropped"], "unit": "positions dropped by the full outbox (its record)",
        "baseline": None, "baseline_what": "none (absolute goal)", "ratio": None, "goal": "0 (held back, not dropped)",
        "met": acc["positions_dropped"] == 0, "scenario": scenario,
        "position_refusals": full["held_back"], "positions_lost_unexplained": acc["positions"]["unexplained"],
        "meter_readings_thinned": full["thinned"], "meter_readings_dropped": full["dropped"],
    }
    figs["bench.county_energy_changed"] = {
        "value": energy["changed"], "unit": "meter-counter-days whose energy the thinned readings change",
        "baseline": None, "baseline_what": "none (absolute goal)", "ratio": None, "goal": "0", "met": energy["changed"] == 0,
        "scenario": scenario, "counters_thinned": energy["meter_counters_thinned"], "days": energy["days"],
        "readings_thinned": energy.get("readings_thinned", 0), "examples": energy["examples"],
    }



def _stress(quick: bool, figs: dict, summaries: list) -> None:
    from simulators.testbench.report import markdown, plot
    from simulators.testbench.runner import run_scenario
    from simulators.testbench.scenario import load_scenario
    if quick:
        figs["bench.stress_cpu_cores"] = _null("skipped in quick mode", "cores", "< 1")
        figs["bench.stress_rss_mb"] = _null("skipped in quick mode", "MB", "< 500")
    else:
        sdur = _env("BENCH_STRESS_S", 120.0)
        rep = run_scenario(load_scenario("stress"), WORK / "stress", duration_s=sdur, chaos=False)
        plot(rep, HERE / "scenario_stress.png")
        summaries.append(markdown(rep))
        cores, rss = rep["edge"]["cpu_cores"], rep["edge"]["rss_mb_max"]
        extra = {"throughput_points_per_s": rep["throughput_points_per_s"], "scenario": f"stress, {sdur:.0f} s",
                 "unexplained_loss": rep["accounting"]["unexplained"], "drain_s": rep["drain_s"]}
        figs["bench.stress_cpu_cores"] = {"value": cores, "unit": "cores", "baseline": None, "baseline_what": "none (absolute goal)",
                                          "ratio": None, "goal": "< 1", "met": cores is not None and cores < 1, **extra}
        figs["bench.stress_rss_mb"] = {"value": rss, "unit": "MB", "baseline": None, "baseline_what": "none (absolute goal)",
                                       "ratio": None, "goal": "< 500", "met": rss is not None and rss < 500, **extra}



def _scaleout(quick: bool, figs: dict, summaries: list) -> None:
    from simulators.testbench.scaleout import run_scaleout
    veh, ticks = (100, 20) if quick else (500, int(_env("BENCH_SCALEOUT_TICKS", 120)))
    so = run_scaleout(WORK / "scaleout", vehicles=veh, ticks=ticks)
    r = so["ratio"]
    figs["bench.scaleout_ratio"] = {
        "value": None if r is None else round(r, 3), "unit": "x",
        "baseline": 1.0, "baseline_what": f"one edge instance on the same backlog ({so['one']['positions_per_s']:.0f} positions/s)",
        "ratio": None if r is None else round(r, 3), "goal": ">= 1.7", "met": r is not None and r >= 1.7,
        "one_positions_per_s": so["one"]["positions_per_s"], "two_positions_per_s": so["two"]["positions_per_s"],
        "backlog_positions": so["two"]["positions"], "per_edge": so["two"]["per_edge"],
        "doubled": so["doubled"], "lost_unexplained": so["lost_unexplained"],
        "cpu_s_during_drain": {"one": so["one"]["cpu_s"], "two": so["two"]["cpu_s"]},
        "cores_busy": {"one": so["one"]["cores_busy"], "two": so["two"]["cores_busy"]},
        "edge_cpu_ms_per_1000_positions": _edge_cpu(so),
    }
    # the same with each edge held to half a core, as if on a host of its own: what the edges do
    # when they do not share the machine's two cores with each other, Mosquitto and influxd
    from simulators.testbench.scaleout import cpu_budget_available
    cores = float(os.environ.get("BENCH_SCALEOUT_CORES_PER_EDGE", 0.5))
    goal = ">= 1.7 (each edge held to {:g} core by a cgroup CFS quota)".format(cores)
    why = "skipped in quick mode" if quick else cpu_budget_available()
    if why:
        figs["bench.scaleout_ratio_equal_cpu"] = _null(why, "x", goal)
        return
    eq = run_scaleout(WORK / "scaleout", vehicles=veh, ticks=ticks, cores_per_edge=cores)
    r = eq["ratio"]
    figs["bench.scaleout_ratio_equal_cpu"] = {
        "value": None if r is None else round(r, 3), "unit": "x", "baseline": 1.0,
        "baseline_what": f"one edge held to {cores:g} core on the same backlog ({eq['one']['positions_per_s']:.0f} positions/s)",
        "ratio": None if r is None else round(r, 3), "goal": goal, "met": r is not None and r >= 1.7,
        "one_positions_per_s": eq["one"]["positions_per_s"], "two_positions_per_s": eq["two"]["positions_per_s"],
        "backlog_positions": eq["two"]["positions"], "per_edge": eq["two"]["per_edge"],
        "doubled": eq["doubled"], "lost_unexplained": eq["lost_unexplained"],
        "cores_busy": {"one": eq["one"]["cores_busy"], "two": eq["two"]["cores_busy"]},
        "edge_cpu_ms_per_1000_positions": _edge_cpu(eq),
    }


def _edge_cpu(so: dict) -> dict:
    """The edges' CPU milliseconds per 1,000 positions during the drain, one edge and two."""
    return {k: round(1e6 * sum(v for n, v in so[k]["cpu_s"].items() if n.startswith("edge-")) / so[k]["positions"], 1)
            for k in ("one", "two")}



def _soak(quick: bool, figs: dict, summaries: list) -> None:
    from simulators.testbench.report import markdown, plot
    if os.environ.get("BENCH_SOAK") == "1":
        from simulators.testbench.soak import run_soak
        sd = _env("BENCH_SOAK_S", 1800.0)
        rep = run_soak(WORK / "soak", duration_s=sd, warmup_s=min(300.0, sd / 6))
        plot(rep, HERE / "scenario_soak.png")
        summaries.append(markdown(rep))
        g = rep["soak"]["mem_growth_pct"]
        figs["bench.soak_mem_growth_pct"] = {"value": None if g is None else round(g, 2), "unit": "%", "baseline": None,
                                             "baseline_what": "none (absolute goal)", "ratio": None, "goal": "< 5",
                                             "met": g is not None and g < 5, "duration_s": sd,
                                             "outbox_depth_max": rep["soak"]["depth_max"]}
    # without BENCH_SOAK=1 the figure is left out, so results.json keeps the last soak's (with its date)


if __name__ == "__main__":
    print(json.dumps(run(quick=True), indent=2))
