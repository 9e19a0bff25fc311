"""energy.year_1000_meters_s: 1,000 meters x 1 year of 15-minute counter readings (35 M values):
consumption (counter deltas with wrap/reset/gap rules, 15-min binning on the Asia/Shanghai day
grid), every daily indicator per meter and per org of the roll-up tree, and 1,000 CalTRACK daily
baselines, against a pandas implementation of the daily sums only (tz-aware index, diff,
resample('D').sum()) on the same data in the same run.

The data are generated once (a child writes .npy files to a temporary directory); each side
then runs in its own child process, so its peak RSS is its own (``energy.year_1000_meters_rss_mb``),
with BLAS single-threaded, and reports the best of three runs with its CPU seconds: the machine
is shared, and the least disturbed run is the one that measures the code.

    python -m bench.energy            # full size
    python -m bench.energy --quick    # 20 meters, seconds
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def make_data(n_meters: int, n_days: int = 365, seed: int = 7):
    """Synthetic office counters: base load, working-hours load, weather sensitivity, noise;
    0.05 % readings missing and one meter replaced mid-year. Returns (times, values, temp, first_day)."""
    import datetime as dt

    import numpy as np

    from analytics.periods import QUARTER_NS, LocalCalendar
    from analytics.workcal import WorkCalendar

    cal = LocalCalendar()
    first = dt.date(2025, 1, 1)
    first_day = cal.day_of(first)
    n = n_days * 96 + 1
    times = cal.day_start_ns(first_day) + np.arange(n, dtype=np.int64) * QUARTER_NS
    rng = np.random.default_rng(seed)
    doy = np.arange(n_days)
    temp = 17 - 11 * np.cos(2 * np.pi * (doy - 20) / 365) + rng.normal(0, 2.5, n_days)
    work = WorkCalendar().working_quarters(first, n_days).reshape(-1).astype(np.float32)
    hdd = np.repeat(np.maximum(12 - temp, 0), 96).astype(np.float32)
    cdd = np.repeat(np.maximum(temp - 22, 0), 96).astype(np.float32)
    values = np.empty((n_meters, n))
    for r0 in range(0, n_meters, 100):
        r1 = min(r0 + 100, n_meters)
        k = r1 - r0
        base = rng.uniform(3, 30, (k, 1)).astype(np.float32)
        kw = (base + base * rng.uniform(1, 3, (k, 1)).astype(np.float32) * work[None, :]
              + rng.uniform(0, 2, (k, 1)).astype(np.float32) * hdd + rng.uniform(0, 3, (k, 1)).astype(np.float32) * cdd)
        kw *= rng.uniform(0.9, 1.1, kw.shape).astype(np.float32)
        e = np.empty((k, n))
        e[:, 0] = rng.uniform(0, 1e5, k)
        np.cumsum(kw * 0.25, axis=1, out=e[:, 1:])
        e[:, 1:] += e[:, :1]
        values[r0:r1] = e
    miss = rng.random(values.shape) < 0.0005
    values[miss] = np.nan
    values[0, n // 2:] -= values[0, n // 2] - 5.0       # meter 0 replaced mid-year
    return times, values, temp, first_day


def _cpu() -> float:
    """CPU seconds of this process: reported next to wall time because the machine is shared."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


REPEATS = 3


def _load(data_dir: str):
    import numpy as np

    d = Path(data_dir)
    times = np.load(d / "times.npy")
    values = np.load(d / "values.npy")
    temp = np.load(d / "temp.npy")
    first_day = int(np.load(d / "first_day.npy"))
    return times, values, temp, first_day


def _ours(times, values, temp, first_day) -> tuple[dict, dict]:
    """The full pipeline once: stage wall times and a summary."""
    import numpy as np

    from analytics.baseline import fit_daily_models
    from analytics.counters import CounterSpec
    from analytics.energy import apply_rollup, block_from_counters, compute_indicators, rollup_by_org
    from analytics.periods import LocalCalendar, Period
    from analytics.workcal import WorkCalendar

    n_meters, n_days = values.shape[0], temp.size
    stages = {}
    t0 = time.perf_counter()
    cal = LocalCalendar()
    working = WorkCalendar().working_quarters(cal.date_of(first_day), n_days)
    ids = [f"m{i:04d}" for i in range(n_meters)]
    orgs = [f"330000/3301{(i // 250):02d}/33010{(i // 50) % 5}/inst-{i // 10:03d}" for i in range(n_meters)]
    carriers = ["electricity"] * n_meters
    blk, events = block_from_counters(times, values, CounterSpec(rated_kw=500.0), cal, first_day, n_days,
                                      ids, orgs, carriers)
    stages["counters_to_15min_s"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    day = compute_indicators(blk, Period.day, cal, working)
    stages["meter_daily_indicators_s"] = time.perf_counter() - t1
    t1 = time.perf_counter()
    org_blk = apply_rollup(blk, rollup_by_org(orgs, carriers))
    org_day = compute_indicators(org_blk, Period.day, cal, working, scope="org")
    stages["org_rollup_daily_indicators_s"] = time.perf_counter() - t1
    t1 = time.perf_counter()
    models = fit_daily_models(day.fields["consumption_kwh"], temp)
    stages["baselines_s"] = time.perf_counter() - t1
    stages["total_s"] = time.perf_counter() - t0
    summary = {"check_kwh": float(np.nansum(day.fields["consumption_kwh"])), "orgs": len(org_day.ids),
               "events": len(events), "models": len(models), "g14_ok": int(sum(m.g14_ok for m in models)),
               "types": {k: sum(m.model_type == k for m in models) for k in
                         ("intercept_only", "hdd_only", "cdd_only", "hdd_cdd")}}
    return stages, summary


def _child(kind: str, data_dir: str) -> dict:
    """Best of ``REPEATS`` runs (the machine is shared: the minimum is the least disturbed run),
    with CPU seconds of that run and the process's peak RSS."""
    import numpy as np

    times, values, temp, first_day = _load(data_dir)
    n_days = temp.size
    runs = []
    for _ in range(REPEATS):
        cpu0 = _cpu()
        if kind == "sums":
            # like for like with pandas: daily sums only, same counter rules as the full pipeline
            from analytics.counters import CounterSpec
            from analytics.energy import daily_consumption
            from analytics.periods import LocalCalendar

            t0, cpu0 = time.perf_counter(), _cpu()
            daily, _ = daily_consumption(times, values, CounterSpec(rated_kw=500.0), LocalCalendar(), first_day,
                                         n_days)
            elapsed = time.perf_counter() - t0
            extra = {"check_kwh": float(np.nansum(daily))}
        elif kind == "ours":
            import analytics.baseline  # noqa: F401  (imports, scipy.stats, not timed)

            cpu0 = _cpu()
            stages, extra = _ours(times, values, temp, first_day)
            elapsed = stages.pop("total_s")
            extra["stages"] = {k: round(v, 3) for k, v in stages.items()}
        else:
            import pandas as pd

            idx = pd.DatetimeIndex(pd.to_datetime(times, unit="ns", utc=True)).tz_convert("Asia/Shanghai")
            df = pd.DataFrame(values.T, index=idx, columns=[f"m{i:04d}" for i in range(values.shape[0])])
            t0, cpu0 = time.perf_counter(), _cpu()
            d = df.diff()
            d = d.where(d >= 0)                 # the reset interval counts nothing, like ours
            # a delta belongs to the interval that ends at its reading: label by interval start
            d.index = d.index - pd.Timedelta(minutes=15)
            daily = d.iloc[1:].resample("D").sum(min_count=1)
            elapsed = time.perf_counter() - t0
            extra = {"check_kwh": float(np.nansum(daily.to_numpy())), "days": len(daily)}
            del df, d, daily
        runs.append({"seconds": elapsed, "cpu_s": round(_cpu() - cpu0, 3), **extra})
    best = min(runs, key=lambda r: r["seconds"])
    best["all_seconds"] = [round(r["seconds"], 3) for r in runs]
    best["rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return best


def _gen(n_meters: int, data_dir: str) -> dict:
    import numpy as np

    times, values, temp, first_day = make_data(n_meters)
    d = Path(data_dir)
    np.save(d / "times.npy", times)
    np.save(d / "values.npy", values)
    np.save(d / "temp.npy", temp)
    np.save(d / "first_day.npy", np.array(first_day))
    return {"values": int(values.size)}


def _spawn(kind: str, arg: str, extra: str = "") -> dict:
    import os

    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "bench.energy", "--child", kind, arg] + ([extra] if extra else [])
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"{kind} child failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(quick: bool = False) -> dict:
    import tempfile

    n = 20 if quick else 1000
    with tempfile.TemporaryDirectory(prefix="bench-energy-") as tmp:
        _spawn("gen", str(n), tmp)
        ours = _spawn("ours", tmp)
        sums = _spawn("sums", tmp)
        pandas = _spawn("pandas", tmp)
    ratio = pandas["seconds"] / ours["seconds"] if ours["seconds"] > 0 else None
    ratio_sums = pandas["seconds"] / sums["seconds"] if sums["seconds"] > 0 else None
    met = ours["seconds"] <= 20 and ours["rss_mb"] <= 4096 and ratio is not None and ratio > 1
    # pandas drops the interval across a missing reading (its diff is NaN); ours keeps it, so
    # ours is slightly larger: the difference is the energy pandas loses
    agree = (ours["check_kwh"] - pandas["check_kwh"]) / max(abs(pandas["check_kwh"]), 1.0)
    return {
        "energy.year_1000_meters_s": {
            "value": round(ours["seconds"], 2), "unit": "s",
            "baseline": round(pandas["seconds"], 2),
            "baseline_what": f"pandas diff + resample('D').sum() of the daily sums only, {n} meters, same data "
                             f"(best of {REPEATS}, each side in its own process, BLAS single-threaded)",
            "ratio": round(ratio, 3) if ratio else None,
            "goal": "<= 20 s and <= 4 GB, faster than pandas", "met": bool(met),
            "meters": n, "values": n * (365 * 96 + 1),
            "like_for_like": {"what": "our daily sums alone (same counter rules, 15-min binning, day sums)",
                              "seconds": round(sums["seconds"], 3),
                              "ratio_vs_pandas": round(ratio_sums, 3) if ratio_sums else None},
            "detail": {"ours": ours, "sums": sums, "pandas": pandas, "ours_minus_pandas_relative": agree,
                       "loadavg_1min": round(__import__("os").getloadavg()[0], 2)},
        },
        "energy.year_1000_meters_rss_mb": {
            "value": round(ours["rss_mb"], 1), "unit": "MB", "baseline": round(pandas["rss_mb"], 1),
            "baseline_what": "peak RSS of the pandas child (daily sums only)",
            "ratio": round(pandas["rss_mb"] / ours["rss_mb"], 3), "goal": "<= 4096 MB",
            "met": ours["rss_mb"] <= 4096,
        },
    }


if __name__ == "__main__":
    if len(sys.argv) >= 4 and sys.argv[1] == "--child":
        sys.path.insert(0, str(ROOT))
        if sys.argv[2] == "gen":
            print(json.dumps(_gen(int(sys.argv[3]), sys.argv[4])))
        else:
            print(json.dumps(_child(sys.argv[2], sys.argv[3])))
    else:
        print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
