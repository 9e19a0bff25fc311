"""energy.year_1000_meters_s: 1,000 meters x 1 year of 15-minute counter readings (35 M values):
consumption (counter deltas with wrap/reset/gap rules, 15-min binning on the Asia/Shanghai day
grid), every daily indicator per meter and per org of the roll-up tree, and 1,000 CalTRACK daily
baselines, against the same work written in pandas (``_pandas_pipeline``: groupby/resample,
numpy/scipy for the regressions) on the same data in the same run; the two pipelines' results
are cross-checked (``cross_check``). The earlier baseline, pandas computing the daily sums alone
(diff + resample('D').sum()), is still measured and reported in the figure's detail.

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

    from analytics.energy.baseline import fit_daily_models
    from analytics.energy.counters import CounterSpec
    from analytics.energy.indicators import apply_rollup, block_from_counters, compute_indicators, rollup_by_org
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
    meter_fields = {k: day.fields[k] for k in SAMPLE_FIELDS}
    org_fields = {k: org_day.fields[k] for k in SAMPLE_FIELDS}
    coefs = {ids[r]: [models[r].model_type, models[r].intercept, models[r].beta_hdd, models[r].beta_cdd,
                      models[r].hdd_bp_c, models[r].cdd_bp_c] for r in SAMPLE_METERS if r < n_meters}
    summary["samples"] = _samples(meter_fields, ids, org_fields, list(org_day.ids), coefs)
    return stages, summary


SAMPLE_METERS = (0, 1, 123, 500, 999)
SAMPLE_DAYS = (0, 45, 180, 200, 364)
SAMPLE_ORGS = ("330000", "330000/330101", "330000/330101/330102", "330000/330100/330100/inst-000")
SAMPLE_FIELDS = ("consumption_kwh", "peak_kw", "base_load_kw", "off_hours_share", "load_factor", "coverage")


def _samples(meter_fields: dict, meter_ids: list, org_fields: dict, org_ids: list, coefs: dict) -> dict:
    """A few values of each indicator (meters and orgs, some days) and some baselines' coefficients,
    for the two pipelines to be cross-checked; plus each field's total over all rows and days."""
    import numpy as np

    out: dict = {"meters": {}, "orgs": {}, "totals": {}, "models": coefs}
    for k, a in meter_fields.items():
        for r in SAMPLE_METERS:
            if r < len(meter_ids):
                out["meters"][f"{k}|{meter_ids[r]}"] = [_f(a[r, d]) for d in SAMPLE_DAYS if d < a.shape[1]]
        out["totals"][f"meters|{k}"] = _f(np.nansum(a))
    for k, a in org_fields.items():
        for o in SAMPLE_ORGS:
            if o in org_ids:
                out["orgs"][f"{k}|{o}"] = [_f(a[org_ids.index(o), d]) for d in SAMPLE_DAYS if d < a.shape[1]]
        out["totals"][f"orgs|{k}"] = _f(np.nansum(a))
    return out


def _f(x) -> float | None:
    x = float(x)
    return None if x != x else x


def _org_of(i: int) -> str:
    return f"330000/3301{(i // 250):02d}/33010{(i // 50) % 5}/inst-{i // 10:03d}"


# --- the same work in pandas (the like-for-like baseline) ----------------------------------------

def _pandas_pipeline(times, values, temp, first_day) -> tuple[dict, dict]:
    """What a competent analyst would write with pandas (and numpy/scipy where pandas has nothing):
    the same counter rules (previous valid reading, backstep/reset/jump/gap, an interval across
    missing readings spread over its quarters), 15-min energy on the Asia/Shanghai day, every
    daily indicator per meter, the org roll-up tree (groupby over the org path prefixes) and its
    daily indicators, and one CalTRACK daily baseline per meter: the balance-point grid solved
    per meter (numpy's batched solve over the candidates), the chosen model refitted with
    np.linalg.lstsq. Constants are those of ``CounterSpec(rated_kw=500)``, ``BaselineSettings()``
    and the default factor set."""
    import numpy as np
    import pandas as pd
    from scipy import stats

    from analytics.energy.factors import FactorSet
    from analytics.periods import LocalCalendar
    from analytics.workcal import WorkCalendar

    stages = {}
    t0 = time.perf_counter()
    rated_kw, margin, tol, max_gap_s, min_cov = 500.0, 1.5, 0.05, 1800.0, 0.2
    n_meters = values.shape[0]
    ids = [f"m{i:04d}" for i in range(n_meters)]
    idx = pd.DatetimeIndex(pd.to_datetime(times, unit="ns", utc=True)).tz_convert("Asia/Shanghai")
    df = pd.DataFrame(values.T, index=idx, columns=ids)
    # counter deltas: against the previous valid reading, over the time since it
    valid = df.notna()
    prev = df.ffill().shift(1)
    tcol = pd.DataFrame(np.broadcast_to(times[:, None].astype(np.float64), df.shape), index=idx, columns=ids)
    dt_s = (tcol - tcol.where(valid).ffill().shift(1)) / 1e9
    delta = df - prev                                          # NaN where no interval ends
    interval = delta.notna()
    reset = delta < -tol                                       # (no rollover configured: never a wrap)
    counted = delta.clip(lower=0.0)                            # backsteps and resets count 0
    jump = counted > rated_kw * margin * dt_s / 3600.0 + tol
    counted = counted.mask(jump, 0.0)
    good = interval & ~reset & ~jump & ~(dt_s > max_gap_s)
    nbins = (dt_s / 900.0).round()
    # an interval's energy spread evenly over its quarters (filled back over the missing readings)
    per_bin = (counted / nbins).bfill(limit_area="inside")
    cov_at = good.astype(np.float64).where(interval).bfill(limit_area="inside").fillna(0.0)
    q = per_bin.iloc[1:]
    q.index = q.index - pd.Timedelta(minutes=15)              # label a quarter by its start
    cov = cov_at.iloc[1:]
    cov.index = q.index
    stages["counters_to_15min_s"] = time.perf_counter() - t0

    cal = LocalCalendar()
    n_days = temp.size
    off = pd.Series((~WorkCalendar().working_quarters(cal.date_of(first_day), n_days)).reshape(-1)
                    .astype(np.float64), index=q.index)
    fs = FactorSet()
    kgce_f, co2_f = fs.kgce_per_unit("electricity"), fs.kgco2_per_unit("electricity")

    def daily(qq: pd.DataFrame, cc: pd.DataFrame) -> dict:
        consumption = qq.resample("D").sum(min_count=1)
        off_kwh = qq.mul(off, axis=0).resample("D").sum()
        cov_q = cc.resample("D").sum()
        power = (qq / cc).where(cc >= min_cov)                 # kWh per covered quarter-hour
        peak_kw = power.resample("D").max() * 4.0
        base_kw = power.between_time("00:00", "05:45").resample("D").quantile(0.05) * 4.0
        mean_kw = consumption / (cov_q / 4.0)
        return {"consumption_kwh": consumption, "kgce": consumption * kgce_f, "kgco2": consumption * co2_f,
                "peak_kw": peak_kw, "load_factor": mean_kw / peak_kw, "base_load_kw": base_kw,
                "off_hours_share": off_kwh / consumption, "coverage": cov_q / 96.0}

    t1 = time.perf_counter()
    day = daily(q, cov)
    stages["meter_daily_indicators_s"] = time.perf_counter() - t1

    t1 = time.perf_counter()
    paths = [_org_of(i) for i in range(n_meters)]
    depth = max(p.count("/") for p in paths) + 1
    qt, ct = q.T, cov.T
    org_q, org_c = [], []
    for lvl in range(depth):
        key = pd.Series(["/".join(p.split("/")[:lvl + 1]) for p in paths], index=ids)
        org_q.append(qt.groupby(key, sort=False).sum(min_count=1))
        org_c.append(ct.groupby(key, sort=False).mean())
    oq, oc = pd.concat(org_q).T, pd.concat(org_c).T
    org_day = daily(oq, oc)
    stages["org_rollup_daily_indicators_s"] = time.perf_counter() - t1

    t1 = time.perf_counter()
    models = _pandas_baselines(day["consumption_kwh"], np.asarray(temp, dtype=np.float64), np, stats)
    stages["baselines_s"] = time.perf_counter() - t1
    stages["total_s"] = time.perf_counter() - t0
    summary = {"check_kwh": float(np.nansum(day["consumption_kwh"].to_numpy())), "orgs": oq.shape[1],
               "models": len(models),
               "types": {k: sum(m[0] == k for m in models.values()) for k in
                         ("intercept_only", "hdd_only", "cdd_only", "hdd_cdd")}}
    coefs = {ids[r]: list(models[ids[r]]) for r in SAMPLE_METERS if r < n_meters}
    summary["samples"] = _samples({k: day[k].to_numpy().T for k in SAMPLE_FIELDS}, ids,
                                  {k: org_day[k].to_numpy().T for k in SAMPLE_FIELDS}, list(oq.columns), coefs)
    return stages, summary


def _pandas_baselines(daily_kwh, temp, np, stats) -> dict:
    """CalTRACK daily model per meter: intercept-only, HDD-only, CDD-only, HDD+CDD over balance
    points 30..90 °F; a candidate needs positive slopes with p < 0.1, ≥ 10 days with degree days
    and ≥ 20 °F·days; best adjusted R² wins; the winner refitted with np.linalg.lstsq."""
    bp = (np.arange(30.0, 90.5, 1.0) - 32.0) / 1.8
    p_max, min_nz, min_tot = 0.1, 10, 20.0 / 1.8
    ii, jj = np.triu_indices(bp.size)                          # HDD+CDD pairs, bp_h <= bp_c
    out = {}
    for meter in daily_kwh.columns:
        y_all = daily_kwh[meter].to_numpy()
        ok = ~np.isnan(y_all) & ~np.isnan(temp)
        y, t = y_all[ok], temp[ok]
        n = y.size
        H = np.maximum(bp[:, None] - t[None, :], 0.0)           # (balance points, days)
        C = np.maximum(t[None, :] - bp[:, None], 0.0)
        sst = ((y - y.mean()) ** 2).sum()
        best = ("intercept_only", 0.0, None)
        for kind, D in (("hdd_only", H), ("cdd_only", C)):
            xtx = np.empty((bp.size, 2, 2))
            xtx[:, 0, 0], xtx[:, 0, 1] = n, D.sum(1)
            xtx[:, 1, 0], xtx[:, 1, 1] = xtx[:, 0, 1], (D * D).sum(1)
            xty = np.stack([np.full(bp.size, y.sum()), D @ y], axis=1)
            usable = ((D > 0).sum(1) >= min_nz) & (D.sum(1) >= min_tot) & (np.linalg.det(xtx) > 1e-9 * n * n)
            if not usable.any():
                continue
            k = np.flatnonzero(usable)
            inv = np.linalg.inv(xtx[k])
            beta = np.einsum("kij,kj->ki", inv, xty[k])
            sse = (y * y).sum() - np.einsum("ki,ki->k", beta, xty[k])
            s2 = sse / (n - 2)
            tval = beta[:, 1] / np.sqrt(s2 * inv[:, 1, 1])
            pval = 2 * stats.t.sf(np.abs(tval), n - 2)
            adj = 1 - (sse / sst) * (n - 1) / (n - 2)
            adj = np.where((beta[:, 1] > 0) & (pval < p_max), adj, -np.inf)
            j = int(np.argmax(adj))
            if adj[j] > best[1]:
                best = (kind, adj[j], (k[j],))
        hh, cc = H[ii], C[jj]
        usable = (((H > 0).sum(1)[ii] >= min_nz) & ((C > 0).sum(1)[jj] >= min_nz)
                  & (H.sum(1)[ii] >= min_tot) & (C.sum(1)[jj] >= min_tot))
        k = np.flatnonzero(usable)
        if k.size:
            hk, ck = hh[k], cc[k]
            xtx = np.empty((k.size, 3, 3))
            xtx[:, 0, 0] = n
            xtx[:, 0, 1] = xtx[:, 1, 0] = hk.sum(1)
            xtx[:, 0, 2] = xtx[:, 2, 0] = ck.sum(1)
            xtx[:, 1, 1] = (hk * hk).sum(1)
            xtx[:, 2, 2] = (ck * ck).sum(1)
            xtx[:, 1, 2] = xtx[:, 2, 1] = (hk * ck).sum(1)
            xty = np.stack([np.full(k.size, y.sum()), hk @ y, ck @ y], axis=1)
            good = np.abs(np.linalg.det(xtx)) > 1e-9 * n ** 3
            k, xtx, xty = k[good], xtx[good], xty[good]
            inv = np.linalg.inv(xtx)
            beta = np.einsum("kij,kj->ki", inv, xty)
            sse = (y * y).sum() - np.einsum("ki,ki->k", beta, xty)
            s2 = sse / (n - 3)
            crit = stats.t.ppf(1 - p_max / 2, n - 3)
            sig = ((beta[:, 1] / np.sqrt(s2 * inv[:, 1, 1]) > crit) & (beta[:, 2] / np.sqrt(s2 * inv[:, 2, 2]) > crit))
            adj = 1 - (sse / sst) * (n - 1) / (n - 3)
            adj = np.where((beta[:, 1] > 0) & (beta[:, 2] > 0) & sig, adj, -np.inf)
            j = int(np.argmax(adj)) if adj.size else 0
            if adj.size and adj[j] > best[1]:
                best = ("hdd_cdd", adj[j], (ii[k[j]], jj[k[j]]))
        kind, _, at = best
        cols = [np.ones(n)]
        hbp = cbp = float("nan")
        if kind in ("hdd_only", "hdd_cdd"):
            hbp = float(bp[at[0]])
            cols.append(np.maximum(hbp - t, 0.0))
        if kind in ("cdd_only", "hdd_cdd"):
            cbp = float(bp[at[-1]])
            cols.append(np.maximum(t - cbp, 0.0))
        coef, *_ = np.linalg.lstsq(np.stack(cols, axis=1), y, rcond=None)
        b_h = float(coef[1]) if kind in ("hdd_only", "hdd_cdd") else 0.0
        b_c = float(coef[-1]) if kind in ("cdd_only", "hdd_cdd") else 0.0
        out[meter] = (kind, float(coef[0]), b_h, b_c, hbp, cbp)
    return out


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
            from analytics.energy.counters import CounterSpec
            from analytics.energy.indicators import daily_consumption
            from analytics.periods import LocalCalendar

            t0, cpu0 = time.perf_counter(), _cpu()
            daily, _ = daily_consumption(times, values, CounterSpec(rated_kw=500.0), LocalCalendar(), first_day,
                                         n_days)
            elapsed = time.perf_counter() - t0
            extra = {"check_kwh": float(np.nansum(daily))}
        elif kind == "ours":
            import analytics.energy.baseline  # noqa: F401  (imports, scipy.stats, not timed)

            cpu0 = _cpu()
            stages, extra = _ours(times, values, temp, first_day)
            elapsed = stages.pop("total_s")
            extra["stages"] = {k: round(v, 3) for k, v in stages.items()}
        elif kind == "pandas_full":
            import pandas  # noqa: F401  (imports, scipy.stats, not timed)
            import scipy.stats  # noqa: F401

            cpu0 = _cpu()
            stages, extra = _pandas_pipeline(times, values, temp, first_day)
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


def cross_check(ours: dict, pandas: dict) -> dict:
    """How far the like-for-like pandas pipeline's results are from ours: the largest relative
    difference over the sampled indicator values (meters and orgs), each field's total, and the
    sampled baselines' coefficients and balance points; whether the model-type counts agree."""
    import math

    def rel(a, b) -> float:
        if a is None or b is None:
            return 0.0 if a is None and b is None else math.inf
        if isinstance(a, str) or isinstance(b, str):
            return 0.0 if a == b else math.inf
        if math.isnan(a) and math.isnan(b):
            return 0.0
        return abs(a - b) / max(abs(b), 1e-12)

    so, sp = ours["samples"], pandas["samples"]
    out = {}
    for sec in ("meters", "orgs", "totals"):
        worst = 0.0
        for k, v in so[sec].items():
            w = sp[sec].get(k)
            if w is None:
                worst = math.inf
                continue
            for a, b in zip(v if isinstance(v, list) else [v], w if isinstance(w, list) else [w]):
                worst = max(worst, rel(b, a))
        out[f"max_rel_{sec}"] = worst
    worst = 0.0
    for k, v in so["models"].items():
        w = sp["models"].get(k)
        worst = max([worst] + ([rel(b, a) for a, b in zip(v, w)] if w else [math.inf]))
    out["max_rel_baseline_coefficients"] = worst
    out["check_kwh_rel"] = rel(pandas["check_kwh"], ours["check_kwh"])
    out["model_types_equal"] = ours["types"] == pandas["types"]
    out["values_compared"] = (sum(len(v) for v in so["meters"].values()) + sum(len(v) for v in so["orgs"].values())
                              + len(so["totals"]) + sum(len(v) for v in so["models"].values()))
    out["agree"] = bool(out["model_types_equal"] and max(v for k, v in out.items() if k.startswith(("max_rel", "check")))
                        < 1e-6)
    return {k: (v if not isinstance(v, float) else float(f"{v:.3g}")) for k, v in out.items()}


def run(quick: bool = False) -> dict:
    import os
    import tempfile

    n = 20 if quick else 1000
    with tempfile.TemporaryDirectory(prefix="bench-energy-") as tmp:
        _spawn("gen", str(n), tmp)
        ours = _spawn("ours", tmp)
        pandas = _spawn("pandas_full", tmp)
        sums = _spawn("sums", tmp)
        pandas_sums = _spawn("pandas", tmp)
    check = cross_check(ours, pandas)
    for side in (ours, pandas):
        side.pop("samples", None)
    ratio = pandas["seconds"] / ours["seconds"] if ours["seconds"] > 0 else None
    ratio_old = pandas_sums["seconds"] / ours["seconds"] if ours["seconds"] > 0 else None
    ratio_sums = pandas_sums["seconds"] / sums["seconds"] if sums["seconds"] > 0 else None
    met = ours["seconds"] <= 20 and ours["rss_mb"] <= 4096 and ratio is not None and ratio > 1
    # pandas' plain diff drops the interval across a missing reading (its diff is NaN); ours keeps
    # it, so ours is slightly larger: the difference is the energy that shortcut loses
    agree_sums = (ours["check_kwh"] - pandas_sums["check_kwh"]) / max(abs(pandas_sums["check_kwh"]), 1.0)
    return {
        "energy.year_1000_meters_s": {
            "value": round(ours["seconds"], 2), "unit": "s",
            "baseline": round(pandas["seconds"], 2),
            "baseline_what": f"the same work in pandas (like for like): counter deltas with the same rules "
                             f"(previous valid reading, backstep/reset/jump/gap, spread across missing readings), "
                             f"15-min energy on the Asia/Shanghai day, daily consumption, kgce, kgCO2, peak, load "
                             f"factor, base load, off-hours share and coverage per meter, the org roll-up tree "
                             f"(groupby on org path prefixes) and its daily indicators, and a CalTRACK daily baseline "
                             f"per meter (balance-point grid solved per meter with numpy, winner refitted with "
                             f"np.linalg.lstsq); {n} meters, same data (best of {REPEATS}, each side in its own "
                             f"process, BLAS single-threaded)",
            "ratio": round(ratio, 3) if ratio else None,
            "goal": "<= 20 s and <= 4 GB, faster than the same work in pandas", "met": bool(met),
            "meters": n, "values": n * (365 * 96 + 1),
            "detail": {
                "ours": ours, "pandas_like_for_like": pandas, "cross_check": check,
                "pandas_daily_sums_only": {
                    "what": "pandas diff + resample('D').sum() of the daily sums only (the baseline recorded "
                            "before 2026-11-25; not the same work: no indicators, roll-up or baselines)",
                    "seconds": round(pandas_sums["seconds"], 3), "cpu_s": pandas_sums["cpu_s"],
                    "ratio": round(ratio_old, 3) if ratio_old else None,
                    "ours_daily_sums_only_s": round(sums["seconds"], 3),
                    "ours_daily_sums_only_ratio": round(ratio_sums, 3) if ratio_sums else None,
                    "ours_minus_pandas_kwh_relative": agree_sums,
                    "runs": {"pandas": pandas_sums, "ours_sums": sums}},
                "loadavg_1min": round(os.getloadavg()[0], 2)},
        },
        "energy.year_1000_meters_rss_mb": {
            "value": round(ours["rss_mb"], 1), "unit": "MB", "baseline": round(pandas["rss_mb"], 1),
            "baseline_what": "peak RSS of the like-for-like pandas child (the same work)",
            "ratio": round(pandas["rss_mb"] / ours["rss_mb"], 3), "goal": "<= 4096 MB",
            "met": ours["rss_mb"] <= 4096,
            "detail": {"pandas_daily_sums_only_rss_mb": round(pandas_sums["rss_mb"], 1)},
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
