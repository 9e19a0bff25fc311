"""Soak: the county scenario for a long time (30 minutes by default) without chaos, sampling the
edge's RSS and outbox depth; memory growth after warm-up must stay under 5 %."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from simulators.testbench.report import memory_growth_pct
from simulators.testbench.runner import run_scenario
from simulators.testbench.scenario import load_scenario


def run_soak(workdir: Path, duration_s: float = 1800.0, warmup_s: float = 300.0, scenario: str = "county",
             announce: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    scn = load_scenario(scenario)
    scn = scn.model_copy(update={"duration_s": duration_s})
    report = run_scenario(scn, workdir, chaos=False, announce=announce, sample_every_s=5.0)
    report["soak"] = {"warmup_s": warmup_s, "mem_growth_pct": memory_growth_pct(report["samples"], warmup_s),
                      "depth_max": max((s["depth"] for s in report["samples"]), default=0)}
    return report
