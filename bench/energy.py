"""energy.year_1000_meters_s: 1,000 meters × 1 year of 15-minute counter readings (35 M values),
wired as buildings are metered: 100 buildings, each a tree of depth 3 (a main incomer; lighting,
HVAC and power item meters behind it; two sub-item meters behind each). The work: consumption
(counter deltas with the wrap/replaced/reset/glitch/gap rules, 15-min binning on the Asia/Shanghai
day grid), every daily indicator per meter, per building and per org of the roll-up tree (each
counting its top meters once), the itemised consumption per item and sub-item per day and month
with the unmetered share, and 1,000 CalTRACK daily baselines; against the same work written in
pandas (``_pandas_pipeline``: groupby/resample, numpy/scipy for the regressions) on the same data
in the same run; the two pipelines' results are cross-checked (``cross_check``). The earlier
baseline, pandas computing the daily sums alone (diff + resample('D').sum()), is still measured and
reported in the figure's detail.

Ours runs the service's own pass (``analytics.energy.jobs.compute_energy``), which reads the meters
in chunks of whole trees (here straight from the data file, as the service reads them from the
store chunk by chunk): its peak RSS (``energy.year_1000_meters_rss_mb``) is one chunk's working set
plus the buildings' and orgs' quarter sums, not the whole year of 1,000 meters.

The data are generated once (a child writes .npy files to a temporary directory); each side
then runs in its own child process, so its peak RSS is its own, with BLAS single-threaded, and
reports the best of three runs with its CPU seconds: the machine is shared, and the least
disturbed run is the one that measures the code.

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


# One building's meters: (suffix, index of the parent in the tree or None, item code)
TREE = (("main", None, None), ("light", 0, "01A00"), ("hvac", 0, "01B00"), ("power", 0, "01C00"),
        ("room", 1, "01A10"), ("corridor", 1, "01A20"), ("plant", 2, "01B10"), ("terminal", 2, "01B20"),
        ("lift", 3, "01C10"), ("pump", 3, "01C20"))
PER_BUILDING = len(TREE)


def _org_of(i: int) -> str:
    return f"330000/3301{(i // 250):02d}/33010{(i // 50) % 5}/inst-{i // 10:03d}"


def meter_tree(n_meters: int) -> list[tuple[str, str, str, str | None, str | None]]:
    """(id, org, building, parent, item) of ``n_meters`` meters: buildings of ``PER_BUILDING`` meters
    in trees of depth 3, one building per institution (org)."""
    out = []
    for i in range(n_meters):
        b, k = divmod(i, PER_BUILDING)
        _, parent, item = TREE[k]
        out.append((f"m{i:04d}", _org_of(i), f"b{b:03d}",
                    None if parent is None else f"m{b * PER_BUILDING + parent:04d}", item))
    return out


def make_data(n_meters: int, n_days: int = 365, seed: int = 7):
    """Synthetic office counters wired as trees: the six sub-item circuits of each building have a
    base load, a working-hours load, weather sensitivity and noise; each item meter measures its two
    sub-items plus 5-15 % of its own, each incomer its three items plus 3-8 % unmetered loads and
    losses. 0.05 % readings missing and one meter replaced mid-year. Returns (times, values, temp,
    first_day)."""
    import datetime as dt

    import numpy as np

    from analytics.periods import QUARTER_NS, LocalCalendar
    from analytics.workcal import WorkCalendar

    if n_meters % PER_BUILDING:
        raise ValueError(f"meters come in buildings of {PER_BUILDING}")
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

    def circuits(k: int) -> np.ndarray:
        base = rng.uniform(1, 10, (k, 1)).astype(np.float32)
        kw = (base + base * rng.uniform(1, 3, (k, 1)).astype(np.float32) * work[None, :]
              + rng.uniform(0, 0.7, (k, 1)).astype(np.float32) * hdd + rng.uniform(0, 1, (k, 1)).astype(np.float32) * cdd)
        kw *= rng.uniform(0.9, 1.1, kw.shape).astype(np.float32)
        return kw

    for b0 in range(0, n_meters, 10 * PER_BUILDING):                 # ten buildings at a time
        nb = min(10 * PER_BUILDING, n_meters - b0) // PER_BUILDING
        kw = np.empty((nb * PER_BUILDING, n - 1), dtype=np.float32)
        leaves = circuits(nb * 6).reshape(nb, 6, -1)
        for j in range(nb):
            r = j * PER_BUILDING
            kw[r + 4:r + 10] = leaves[j]
            for item in range(3):
                pair = leaves[j, 2 * item] + leaves[j, 2 * item + 1]
                kw[r + 1 + item] = pair * np.float32(1 + rng.uniform(0.05, 0.15))
            kw[r] = kw[r + 1:r + 4].sum(axis=0) * np.float32(1 + rng.uniform(0.03, 0.08))
        e = values[b0:b0 + nb * PER_BUILDING]
        e[:, 0] = rng.uniform(0, 1e5, nb * PER_BUILDING)
        np.cumsum(kw * 0.25, axis=1, out=e[:, 1:])
        e[:, 1:] += e[:, :1]
    miss = rng.random(values.shape) < 0.0005
    values[miss] = np.nan
    values[0, n // 2:] -= values[0, n // 2] - 5.0       # meter 0 (an incomer) replaced mid-year
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


class RowReader:
    """Rows of the values file read by plain file reads, a chunk at a time (no memory map: the
    pages of the whole year would count in the RSS), as the service reads a chunk of meters from
    the store."""

    def __init__(self, path: Path) -> None:
        import numpy as np

        self.f = open(path, "rb")
        fmt = np.lib.format
        version = fmt.read_magic(self.f)
        read_header = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
        shape, fortran, dtype = read_header(self.f)
        if fortran or dtype != np.float64:
            raise ValueError("values.npy must be C-ordered float64")
        self.offset = self.f.tell()
        self.rows, self.n = shape

    def read(self, rows: list[int]):
        import numpy as np

        if not rows:
            return np.empty((0, self.n))
        lo, hi = min(rows), max(rows) + 1
        self.f.seek(self.offset + lo * self.n * 8)
        block = np.fromfile(self.f, dtype=np.float64, count=(hi - lo) * self.n).reshape(hi - lo, self.n)
        return block if hi - lo == len(rows) and rows == list(range(lo, hi)) else block[np.asarray(rows) - lo]

    def close(self) -> None:
        self.f.close()


def _ours(data_dir: str) -> tuple[dict, dict]:
    """The full pipeline once (the service's pass): stage times and a summary."""
    import numpy as np

    from analytics.energy.baseline import fit_daily_models
    from analytics.energy.counters import CounterSpec
    from analytics.energy.jobs import MeterInfo, compute_energy
    from analytics.periods import LocalCalendar, Period
    from analytics.workcal import WorkCalendar

    d = Path(data_dir)
    times = np.load(d / "times.npy")
    temp = np.load(d / "temp.npy")
    first_day = int(np.load(d / "first_day.npy"))
    reader = RowReader(d / "values.npy")
    n_meters, n_days = reader.rows, temp.size
    stages = {"read_s": 0.0}
    t0 = time.perf_counter()
    cal = LocalCalendar()
    working = WorkCalendar().working_quarters(cal.date_of(first_day), n_days)
    spec = CounterSpec(rated_kw=500.0)
    meters = [MeterInfo(i, org, "electricity", b, spec, parent, item) for i, org, b, parent, item in meter_tree(n_meters)]

    def read(ms):
        t = time.perf_counter()
        v = reader.read([int(m.id[1:]) for m in ms])
        stages["read_s"] += time.perf_counter() - t
        return times, v

    # the tables only, like the pandas side (the service turns a pass's tables into Points to write)
    rep = compute_energy(read, meters, first_day, n_days, working, cal=cal, periods=(Period.day, Period.month),
                         points=False)
    reader.close()
    stages["energy_pass_s"] = time.perf_counter() - t0 - stages["read_s"]
    t1 = time.perf_counter()
    day = next(t for t in rep.tables if t.scope == "meter" and t.period is Period.day)
    models = fit_daily_models(day.fields["consumption_kwh"], temp)
    stages["baselines_s"] = time.perf_counter() - t1
    stages["total_s"] = time.perf_counter() - t0
    org_day = next(t for t in rep.tables if t.scope == "org" and t.period is Period.day and t.carriers[0] != "all")
    b_day = next(t for t in rep.tables if t.scope == "building" and t.period is Period.day and t.carriers[0] != "all")
    ids = list(day.ids)
    summary = {"check_kwh": float(np.nansum(day.fields["consumption_kwh"])), "orgs": len(org_day.ids),
               "buildings": len(b_day.ids), "events": len(rep.events), "alerts": len(rep.alerts),
               "models": len(models), "g14_ok": int(sum(m.g14_ok for m in models)),
               "types": {k: sum(m.model_type == k for m in models) for k in
                         ("intercept_only", "hdd_only", "cdd_only", "hdd_cdd")}}
    meter_fields = {k: day.fields[k] for k in SAMPLE_FIELDS}
    org_fields = {k: org_day.fields[k] for k in SAMPLE_FIELDS}
    b_fields = {k: b_day.fields[k] for k in SAMPLE_FIELDS}
    coefs = {ids[r]: [models[r].model_type, models[r].intercept, models[r].beta_hdd, models[r].beta_cdd,
                      models[r].hdd_bp_c, models[r].cdd_bp_c] for r in SAMPLE_METERS if r < n_meters}
    items = {}
    for t in rep.items:
        for r, key in enumerate(t.keys):
            kind, sid, _, lvl, code = key
            if sid in SAMPLE_ORGS or sid in SAMPLE_BUILDINGS:
                days = SAMPLE_DAYS if t.period is Period.day else SAMPLE_MONTHS
                items[f"{t.period.value}|{kind}|{sid}|{lvl}|{code}"] = [_f(t.consumption[r, k]) for k in days
                                                                       if k < t.consumption.shape[1]]
    summary["samples"] = _samples(meter_fields, ids, org_fields, list(org_day.ids), coefs,
                                  b_fields, list(b_day.ids), items)
    return stages, summary


SAMPLE_METERS = (0, 1, 123, 500, 999)
SAMPLE_DAYS = (0, 45, 180, 200, 364)
SAMPLE_MONTHS = (0, 5, 11)
SAMPLE_ORGS = ("330000", "330000/330101", "330000/330101/330102", "330000/330100/330100/inst-000")
SAMPLE_BUILDINGS = ("b000", "b001", "b042", "b099")
SAMPLE_FIELDS = ("consumption_kwh", "peak_kw", "base_load_kw", "off_hours_share", "load_factor", "coverage")


def _samples(meter_fields: dict, meter_ids: list, org_fields: dict, org_ids: list, coefs: dict,
             b_fields: dict, b_ids: list, items: dict) -> dict:
    """A few values of each indicator (meters, buildings and orgs, some days), the itemised
    consumption of some buildings and orgs (days and months) and some baselines' coefficients,
    for the two pipelines to be cross-checked; plus each field's total over all rows and days."""
    import numpy as np

    out: dict = {"meters": {}, "orgs": {}, "buildings": {}, "items": items, "totals": {}, "models": coefs}
    for k, a in meter_fields.items():
        for r in SAMPLE_METERS:
            if r < len(meter_ids):
                out["meters"][f"{k}|{meter_ids[r]}"] = [_f(a[r, d]) for d in SAMPLE_DAYS if d < a.shape[1]]
        out["totals"][f"meters|{k}"] = _f(np.nansum(a))
    for sec, fields, ids, wanted in (("orgs", org_fields, org_ids, SAMPLE_ORGS),
                                     ("buildings", b_fields, b_ids, SAMPLE_BUILDINGS)):
        for k, a in fields.items():
            for o in wanted:
                if o in ids:
                    out[sec][f"{k}|{o}"] = [_f(a[ids.index(o), d]) for d in SAMPLE_DAYS if d < a.shape[1]]
            out["totals"][f"{sec}|{k}"] = _f(np.nansum(a))
    return out


def _f(x) -> float | None:
    x = float(x)
    return None if x != x else x


# --- the same work in pandas (the like-for-like baseline) ----------------------------------------

def _pandas_pipeline(times, values, temp, first_day) -> tuple[dict, dict]:
    """What a competent analyst would write with pandas (and numpy/scipy where pandas has nothing):
    the same counter rules (previous valid reading, backstep/replaced/reset/jump/gap, an interval
    across missing readings spread over its quarters; the data have no glitch to drop), 15-min
    energy on the Asia/Shanghai day, every daily indicator per meter, per building and per org of
    the roll-up tree (groupby over the org path prefixes), each from the top meters only, the
    itemised consumption per item and sub-item per building and org, day and month (each meter's
    own part by groupby), and one CalTRACK daily baseline per meter: the balance-point grid solved
    per meter (numpy's batched solve over the candidates), the chosen model refitted with
    np.linalg.lstsq. Less than ours: no month indicators besides the items, no data-quality
    alerts (the ratio is conservative). Constants are those of ``CounterSpec(rated_kw=500)``,
    ``BaselineSettings()`` and the default factor set."""
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
    limit = rated_kw * margin * dt_s / 3600.0 + tol
    replaced = reset & (df >= 0) & (df <= limit)               # restarted near zero: the new reading counts
    counted = counted.mask(replaced, df)
    jump = (delta > limit) & ~reset
    counted = counted.mask(jump, 0.0)
    good = interval & ~reset & ~jump & ~(dt_s > max_gap_s)
    nbins = (dt_s / 900.0).round()
    # an interval's energy spread evenly over its quarters (filled back over the missing readings,
    # also right after a meter's first reading: it is marked so the fill sees it as "inside")
    first = valid & (valid.cumsum() == 1)
    per_bin = (counted / nbins).mask(first, 0.0).bfill(limit_area="inside").mask(first)
    cov_at = good.astype(np.float64).where(interval).mask(first, 0.0).bfill(limit_area="inside").fillna(0.0)
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
    tree = meter_tree(n_meters)
    parent = pd.Series([p for _, _, _, p, _ in tree], index=ids)
    building = pd.Series([b for _, _, b, _, _ in tree], index=ids)
    paths = pd.Series([o for _, o, _, _, _ in tree], index=ids)
    tops = parent.index[parent.isna()]                         # a building's and an org's total: its incomers
    bq = q[tops].T.groupby(building[tops], sort=False).sum(min_count=1).T
    bc = cov[tops].T.groupby(building[tops], sort=False).mean().T
    b_day = daily(bq, bc)
    depth = max(p.count("/") for p in paths) + 1
    qt, ct = q[tops].T, cov[tops].T
    org_q, org_c = [], []
    for lvl in range(depth):
        key = paths[tops].map(lambda p, k=lvl: "/".join(p.split("/")[:k + 1]))
        org_q.append(qt.groupby(key, sort=False).sum(min_count=1))
        org_c.append(ct.groupby(key, sort=False).mean())
    oq, oc = pd.concat(org_q).T, pd.concat(org_c).T
    org_day = daily(oq, oc)
    stages["building_org_rollup_daily_indicators_s"] = time.perf_counter() - t1

    # itemised: each meter's own part (itself less the meters behind it) to its item, or to the item
    # above it; an incomer's own part is "unmetered and losses"; per building and per org, day and month
    t1 = time.perf_counter()
    cons = day["consumption_kwh"]
    kids = cons.T.groupby(parent).sum(min_count=1).T.reindex(columns=ids)
    own = cons - kids.fillna(0.0)
    item = pd.Series([i for *_, i in tree], index=ids)
    lvl2 = item.map(lambda c: "unmetered" if c is None else c[:3] + "00")
    lvl3 = item.map(lambda c: "unmetered" if c is None else c)
    items_out = {}
    for lvl, code in ((2, lvl2), (3, lvl3)):
        groups = [("building", building)] + [("org", paths.map(lambda p, k=k: "/".join(p.split("/")[:k + 1])))
                                             for k in range(depth)]
        for kind, scope in groups:
            g = own.T.groupby([scope, code], sort=False).sum(min_count=1)
            for period, frame in (("day", g.T), ("month", g.T.resample("MS").sum(min_count=1))):
                for (sid, c) in frame.columns:
                    if sid in SAMPLE_ORGS or sid in SAMPLE_BUILDINGS:
                        days = SAMPLE_DAYS if period == "day" else SAMPLE_MONTHS
                        col = frame[(sid, c)].to_numpy()
                        items_out[f"{period}|{kind}|{sid}|{lvl}|{c}"] = [_f(col[k]) for k in days if k < col.size]
    stages["itemised_s"] = time.perf_counter() - t1

    t1 = time.perf_counter()
    models = _pandas_baselines(day["consumption_kwh"], np.asarray(temp, dtype=np.float64), np, stats)
    stages["baselines_s"] = time.perf_counter() - t1
    stages["total_s"] = time.perf_counter() - t0
    summary = {"check_kwh": float(np.nansum(day["consumption_kwh"].to_numpy())), "orgs": oq.shape[1],
               "buildings": bq.shape[1], "models": len(models),
               "types": {k: sum(m[0] == k for m in models.values()) for k in
                         ("intercept_only", "hdd_only", "cdd_only", "hdd_cdd")}}
    coefs = {ids[r]: list(models[ids[r]]) for r in SAMPLE_METERS if r < n_meters}
    summary["samples"] = _samples({k: day[k].to_numpy().T for k in SAMPLE_FIELDS}, ids,
                                  {k: org_day[k].to_numpy().T for k in SAMPLE_FIELDS}, list(oq.columns), coefs,
                                  {k: b_day[k].to_numpy().T for k in SAMPLE_FIELDS}, list(bq.columns), items_out)
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

    if kind != "ours":   # ours reads the meters chunk by chunk, as the service does
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
            stages, extra = _ours(data_dir)
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
    for sec in ("meters", "orgs", "buildings", "items", "totals"):
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
    out["values_compared"] = (sum(len(v) for sec in ("meters", "orgs", "buildings", "items") for v in so[sec].values())
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
    met = ours["seconds"] <= 20 and ratio is not None and ratio >= 10
    # pandas' plain diff drops the interval across a missing reading (its diff is NaN); ours keeps
    # it, so ours is slightly larger: the difference is the energy that shortcut loses
    agree_sums = (ours["check_kwh"] - pandas_sums["check_kwh"]) / max(abs(pandas_sums["check_kwh"]), 1.0)
    return {
        "energy.year_1000_meters_s": {
            "value": round(ours["seconds"], 2), "unit": "s",
            "baseline": round(pandas["seconds"], 2),
            "baseline_what": f"the same work in pandas (like for like): {n} meters in trees of depth 3 (100 "
                             f"buildings: incomer, 3 item meters, 6 sub-item meters), counter deltas with the same "
                             f"rules (previous valid reading, backstep/replaced/reset/jump/gap, spread across missing "
                             f"readings), 15-min energy on the Asia/Shanghai day, daily consumption, kgce, kgCO2, "
                             f"peak, load factor, base load, off-hours share and coverage per meter, per building and "
                             f"per org of the roll-up tree from the top meters only, the itemised consumption per "
                             f"item and sub-item per building and org, day and month, and a CalTRACK daily baseline "
                             f"per meter (balance-point grid solved per meter with numpy, winner refitted with "
                             f"np.linalg.lstsq); same data (best of {REPEATS}, each side in its own process, BLAS "
                             f"single-threaded; ours also computes month indicators and data-quality alerts)",
            "ratio": round(ratio, 3) if ratio else None,
            "goal": "<= 20 s, at least 10x faster than the same work in pandas", "met": bool(met),
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
            "ratio": round(pandas["rss_mb"] / ours["rss_mb"], 3),
            "goal": "<= 500 MB (2-4 GB edge boxes): meters in chunks of whole trees",
            "met": ours["rss_mb"] <= 500,
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
