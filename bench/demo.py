"""demo.backfill_400d_s: the demo district's history, as ``edge demo`` writes it before going live.

What is timed (wall clock, this machine, in this process) is what a newcomer waits for after
``make demo``: the weather file; 400 days of the 30 meters' 15-minute counters (1.15 M readings)
and of the 20 vehicles' positions (about 0.9 M fixes) from the simulators, written by the bulk
import (``edge.bulk``); the indicator job over them (energy days, months and years, the fleet a
month at a time, months and years from the day rows, the baselines at each month's end); and the
indicators delivered from the outbox into the store. The simulators are started first and not
timed, the service's API is not started. ``cpu_s`` (every thread of the process) beside the wall
time tells a busy shared machine from a slow backfill. No baseline: nothing else does this.

    python -m bench.demo            # 400 days
    python -m bench.demo --quick    # 60 days (recorded with "days": 60)
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from bench.run import figure
from edge.app.backfill import backfill
from edge.app.demo import building_sims, demo_site, history_events, vehicle_models
from edge.app.service import EdgeService
from edge.app.site import compile_site

DAYS = 400


async def _backfill(days: int, data_dir: Path) -> dict:
    sims = building_sims()
    for sim in sims:
        await sim.start()
    service = None
    try:
        site = demo_site(tuple(m for sim in sims for m in sim.meters()), 0, 0, data_dir,
                         weather_csv=str(data_dir / "weather.csv"))
        compile_site(site, "<demo site>")
        service = EdgeService(site, data_dir=data_dir, with_api=False)
        end_ns = service.clock.now_ns()
        events = history_events(sims, service.indicators.cal.midnight_ns(service.indicators.closed_day(end_ns)), end_ns)
        models = [m for sim in sims for m in sim.history_models(events)]
        cpu0, t0 = time.process_time(), time.perf_counter()
        rep = await backfill(service, models, vehicle_models(), days, end_ns=end_ns)
        t1 = time.perf_counter()
        await service.deliverer.flush(timeout_s=600)
        rep.seconds["storing"] = time.perf_counter() - t1
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        return {"wall_s": wall, "cpu_s": cpu, **rep.summary()}
    finally:
        if service is not None:
            await service.sink.aclose()
            await service.query.aclose()
            service.outbox.close()
        for sim in sims:
            await sim.stop()


def run(quick: bool = False) -> dict:
    days = 60 if quick else DAYS
    tmp = Path(tempfile.mkdtemp(prefix="bench-demo-"))
    try:
        r = asyncio.run(_backfill(days, tmp))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"demo.backfill_400d_s": figure(
        round(r["wall_s"], 1), "s", goal="< 60 s (400 days, 30 meters, 20 vehicles, indicators stored)",
        met=(r["wall_s"] < 60) if days == DAYS else None, higher_is_better=False, days=days,
        cpu_s=round(r["cpu_s"], 1), stages_s=r["seconds"], readings=r["readings"], positions=r["positions"],
        indicator_points=r["indicator_points"])}


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv), indent=2, ensure_ascii=False))
