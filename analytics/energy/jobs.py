"""Energy jobs: read counters through the query layer, compute indicators, return Points.

The query layer (``edge/query.py``) is being written in parallel; this module depends only on
the small ``CounterSource`` protocol below, which an adapter over the query layer implements
(one InfluxQL ``SELECT "<field>" FROM "meter" WHERE "meter"='<id>' AND time >= .. AND time < ..``
per meter, or one query grouped by meter). Until then ``ArraySource`` serves arrays from memory
(tests, ``edge analytics energy --demo``).

``compute_energy_range`` is what ``edge analytics energy --from --to`` runs and what the service
scheduler will run per closed day (recomputing a day when late data arrives is running it
again: the Points have the same identity, so InfluxDB overwrites them).
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from typing import Callable, Protocol, Sequence

import numpy as np

from analytics.energy.anomalies import baseline_anomalies
from analytics.energy.baseline import counter_measured_days, daily_mean_temperature, fit_daily_models, implausible_temperature_days, savings
from analytics.energy.counters import CounterSpec
from analytics.energy.factors import CARRIER_FIELD, FactorSet
from analytics.energy.hierarchy import Hierarchy
from analytics.energy.indicators import (
    IndicatorTable,
    QuarterBlock,
    Rollup,
    add_changes,
    apply_rollup,
    areas_for,
    block_from_counters,
    combine_carriers,
    compute_indicators_many,
    daily_consumption,
    to_points,
)
from analytics.energy.quality import DataQualityAlert, QualityRules, children_exceed_parent, negative_runs
from analytics.periods import NS_PER_DAY, QUARTER_NS, QUARTERS_PER_DAY, LocalCalendar, Period
from analytics.workcal import WorkCalendar
from edge.point import Point

log = logging.getLogger(__name__)


class CounterSource(Protocol):
    """What the energy jobs need from the query layer.

    ``fetch_counter`` returns the raw readings of one counter field of one meter in
    ``[start_ns, end_ns)``: ``times_ns`` int64 ascending (UTC ns) and ``values`` float64 (same
    length), as stored (no deltas, no fill). Empty arrays when there is nothing.
    """

    def fetch_counter(self, meter_id: str, field: str, start_ns: int, end_ns: int
                      ) -> tuple[np.ndarray, np.ndarray]: ...


@dataclass
class ArraySource:
    """A CounterSource over in-memory arrays: ``data[(meter_id, field)] = (times_ns, values)``."""

    data: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    def fetch_counter(self, meter_id: str, field: str, start_ns: int, end_ns: int
                      ) -> tuple[np.ndarray, np.ndarray]:
        t, v = self.data.get((meter_id, field), (np.empty(0, np.int64), np.empty(0)))
        sel = (t >= start_ns) & (t < end_ns)
        return np.asarray(t[sel], dtype=np.int64), np.asarray(v[sel], dtype=np.float64)


class LoopSource:
    """A ``CounterSource`` for a computation running in a worker thread: before each chunk of meters
    (``prepare``) it reads just those meters through ``fetch`` (a coroutine function, run on the
    event loop ``loop``) and serves them, dropping the previous chunk's readings. The readings in
    memory at once are one chunk's, not the whole site's."""

    def __init__(self, fetch: Callable[[Sequence["MeterInfo"]], "object"], loop) -> None:
        self.fetch, self.loop = fetch, loop
        self.current: ArraySource = ArraySource()
        self.chunks = 0

    def prepare(self, meters: Sequence["MeterInfo"]) -> None:
        import asyncio

        self.current = ArraySource()   # let the previous chunk go before the next one arrives
        if meters:
            self.current = asyncio.run_coroutine_threadsafe(self.fetch(list(meters)), self.loop).result()
        self.chunks += 1

    def fetch_counter(self, meter_id: str, field: str, start_ns: int, end_ns: int) -> tuple[np.ndarray, np.ndarray]:
        return self.current.fetch_counter(meter_id, field, start_ns, end_ns)


@dataclass(frozen=True)
class MeterInfo:
    id: str
    org: str
    carrier: str = "electricity"
    building: str | None = None
    spec: CounterSpec = CounterSpec()
    parent: str | None = None                     # the meter it sits behind
    item: str | None = None                       # 分项 code (analytics.energy.items)
    terms: tuple[tuple[float, str], ...] = ()     # a virtual meter: (sign, meter id)

    @property
    def virtual(self) -> bool:
        return bool(self.terms)


@dataclass
class EnergyReport:
    tables: list[IndicatorTable]
    events: list                     # (meter id, CounterEvent)
    points: list                     # edge.point.Point
    items: list = field(default_factory=list)    # ItemTable per period
    alerts: list = field(default_factory=list)   # analytics.energy.quality.DataQualityAlert


@dataclass
class ItemTable:
    """Itemised consumption per scope for consecutive periods. ``keys[r]`` is ``(kind, scope id,
    carrier, level, code)``; ``consumption`` (rows, periods) in the carrier's unit, ``share`` its
    fraction of the scope's total (the scope's top meters)."""

    period: Period
    starts_ns: np.ndarray
    keys: list[tuple]
    orgs: list[str]
    consumption: np.ndarray
    share: np.ndarray
    totals: dict[tuple[str, str, str], np.ndarray]   # (kind, scope id, carrier) -> (periods,)

    def value(self, kind: str, scope_id: str, code: str, level: int = 2, carrier: str = "electricity",
              k: int = 0, field_name: str = "consumption") -> float:
        r = self.keys.index((kind, scope_id, carrier, level, code))
        return float((self.consumption if field_name == "consumption" else self.share)[r, k])

    def breakdown(self, kind: str, scope_id: str, level: int = 2, carrier: str = "electricity", k: int = 0
                  ) -> dict[str, float]:
        return {key[4]: float(self.consumption[r, k]) for r, key in enumerate(self.keys)
                if key[:4] == (kind, scope_id, carrier, level)}


def align_on_grid(series: Sequence[tuple[np.ndarray, np.ndarray]], start_ns: int, end_ns: int,
                  step_ns: int = QUARTER_NS) -> tuple[np.ndarray, np.ndarray]:
    """Put each meter's readings on a shared axis: the union of all reading times (so nothing
    is resampled or invented), NaN where a meter has no reading at a time. When the union is
    larger than a ``step_ns`` grid would be, readings are thinned to the last one at or before
    each grid point (counters are cumulative, so thinning loses no energy, only resolution)."""
    ts = [np.asarray(t, dtype=np.int64) for t, _ in series]
    union = np.unique(np.concatenate(ts)) if ts else np.empty(0, np.int64)
    grid_n = (end_ns - start_ns) // step_ns + 1
    if union.size > grid_n:
        axis = start_ns + np.arange(grid_n, dtype=np.int64) * step_ns
        out = np.full((len(series), axis.size), np.nan)
        for r, (t, v) in enumerate(series):
            if len(t) == 0:
                continue
            k = np.searchsorted(t, axis, side="right") - 1
            ok = k >= 0
            # a grid point takes the last reading at or before it, if that reading is recent
            recent = ok & (axis - t[np.maximum(k, 0)] < step_ns)
            out[r, recent] = np.asarray(v)[k[recent]]
            # the meter's first reading goes to the grid point before it, so the energy between it
            # and the next grid point is counted (measured, not invented; that quarter's coverage
            # reads as full)
            kf = int(np.searchsorted(axis, t[0], side="right")) - 1
            if kf >= 0 and np.isnan(out[r, kf]):
                out[r, kf] = np.asarray(v)[0]
        return axis, out
    out = np.full((len(series), union.size), np.nan)
    for r, (t, v) in enumerate(series):
        out[r, np.searchsorted(union, t)] = v
    return union, out


ChunkReader = Callable[[Sequence[MeterInfo]], tuple[np.ndarray, np.ndarray]]
CHUNK_ROWS = 128   # meters per chunk (whole trees): bounds the working set of a pass
# ... and meter-quarters per chunk: a year's pass takes fewer meters at a time than a day's (a year of
# 128 meters is 4.5 M quarters per array; the stress bench's edge peaked at 583 MB running it at start)
CHUNK_CELLS = 1 << 20


def compute_energy_range(source: CounterSource, meters: Sequence[MeterInfo], first: dt.date, last: dt.date,
                         workcal: WorkCalendar = WorkCalendar(), factors: FactorSet = FactorSet(),
                         cal: LocalCalendar = LocalCalendar(),
                         buildings: Sequence[tuple[str, str, float, int]] = (),
                         periods: Sequence[Period] = (Period.day, Period.month, Period.year),
                         chunk_rows: int = CHUNK_ROWS, quality: QualityRules = QualityRules()) -> EnergyReport:
    """Indicators for local days ``first``..``last`` (inclusive) per meter, building and org,
    per day, month and year, as tables and Points. Month and year rows cover only the days in
    range (a partial month has ``coverage`` < 1). For buildings and orgs, rows with carrier
    ``all`` add 综合能耗 (kgce over carriers) and, given ``buildings`` as (id, org,
    floor_area_m2, occupants), the per-m² and per-person figures and target ratios. Every point
    says ``provisional_calendar`` (its year computed with weekends only: ``WorkCalendar``).

    Buildings and orgs count their top meters only (``analytics.energy.hierarchy``); the itemised
    breakdown per scope is in ``report.items``; children measuring more than their parent are in
    ``report.alerts``."""
    n_days = (last - first).days + 1
    first_day = cal.day_of(first)
    start_ns = int(cal.day_start_ns(first_day))
    end_ns = start_ns + n_days * NS_PER_DAY
    working = workcal.working_quarters(first, n_days)   # weekends only in a year the calendar does not cover
    provisional_years = set(workcal.provisional_years(first, last))

    prepare = getattr(source, "prepare", None)

    def read(ms: Sequence[MeterInfo]) -> tuple[np.ndarray, np.ndarray]:
        if prepare is not None:           # a source that reads chunk by chunk (LoopSource)
            prepare(ms)
        # one quarter of margin each side so the bins at the range's edges have readings around them
        series = [source.fetch_counter(m.id, CARRIER_FIELD[m.carrier][0], start_ns - QUARTER_NS,
                                       end_ns + QUARTER_NS + 1) for m in ms]
        if not series:
            return np.empty(0, np.int64), np.empty((0, 0))
        return align_on_grid(series, start_ns - QUARTER_NS, end_ns + QUARTER_NS)

    report = compute_energy(read, meters, first_day, n_days, working, factors, cal, buildings, periods,
                            chunk_rows, quality,
                            provisional=lambda t: cal.date_of(int(cal.local_day_index(t))).year in provisional_years)
    log.info("energy range=%s..%s meters=%d points=%d events=%d alerts=%d", first, last, len(meters),
             len(report.points), len(report.events), len(report.alerts))
    return report


def _topo(h: Hierarchy, virt: list[int]) -> list[int]:
    """Virtual meters in an order where each comes after the virtual meters it is made of."""
    done: list[int] = []
    seen: set[int] = set()

    def visit(i: int) -> None:
        if i in seen:
            return
        seen.add(i)
        for _, t in h.meters[i].terms:
            j = h.index.get(t)
            if j is not None and j in virt_set:
                visit(j)
        done.append(i)

    virt_set = set(virt)
    for i in virt:
        visit(i)
    return done


class _ScopeSums:
    """Quarter energy of every group of a ``Rollup`` (buildings, or orgs), summed chunk by chunk:
    unknown where no member is known; coverage the members' mean."""

    def __init__(self, rollup: Rollup, n_bins: int) -> None:
        self.rollup = rollup
        g = len(rollup.ids)
        self.q = np.full((g, n_bins), np.nan)
        self.cov = np.zeros((g, n_bins), dtype=np.float32)
        self.members = rollup.matrix.sum(axis=1)

    def add(self, blk: QuarterBlock, cols: list[int]) -> None:
        sub = self.rollup.matrix[:, cols]
        groups = np.flatnonzero(sub.any(axis=1))
        if groups.size == 0:
            return
        used = np.flatnonzero(sub.any(axis=0))          # the chunk's rows that are top meters somewhere
        if used.size < len(cols):
            blk = QuarterBlock(blk.first_day, blk.q[used], blk.coverage[used], [blk.ids[u] for u in used],
                               [blk.orgs[u] for u in used], [blk.carriers[u] for u in used])
            sub = sub[:, used]
        part = apply_rollup(blk, Rollup(self.rollup.scope, [self.rollup.ids[g] for g in groups],
                                        [self.rollup.orgs[g] for g in groups],
                                        [self.rollup.carriers[g] for g in groups], sub[groups]))
        pq = part.q.reshape(groups.size, -1)
        pc = part.coverage.reshape(groups.size, -1) * sub[groups].sum(axis=1)[:, None]
        acc = self.q[groups]
        if np.isnan(acc).any() or np.isnan(pq).any():
            both = acc + pq
            np.copyto(both, acc, where=np.isnan(pq))
            np.copyto(both, pq, where=np.isnan(acc))
            acc = both
        else:
            acc += pq
        self.q[groups] = acc
        self.cov[groups] += pc.astype(np.float32)

    def block(self, first_day: int, n_days: int) -> QuarterBlock:
        g = len(self.rollup.ids)
        cov = self.cov / np.maximum(self.members, 1)[:, None].astype(np.float32)
        return QuarterBlock(first_day, self.q.reshape(g, n_days, QUARTERS_PER_DAY),
                            cov.reshape(g, n_days, QUARTERS_PER_DAY), list(self.rollup.ids), list(self.rollup.orgs),
                            list(self.rollup.carriers))


def _fill_virtual(blk: QuarterBlock, rows: dict[int, int], h: Hierarchy, virt: list[int]) -> None:
    """Virtual rows of a chunk's block: the signed sum of their terms' quarters (unknown where a term
    is); coverage the lowest of the terms'."""
    q = blk.q.reshape(blk.q.shape[0], -1)
    cov = blk.coverage.reshape(blk.q.shape[0], -1)
    for i in virt:
        acc = np.zeros(q.shape[1])
        c = np.ones(q.shape[1], dtype=cov.dtype)
        for sign, t in h.meters[i].terms:
            r = rows.get(h.index.get(t, -1))
            if r is None:             # a term outside the meters computed (the site check refuses it): unknown
                acc[:] = np.nan
                c[:] = 0.0
                break
            acc += sign * q[r]
            np.minimum(c, cov[r], out=c)
        q[rows[i]] = acc
        cov[rows[i]] = c


def _quality_alerts(blk: QuarterBlock, rows: dict[int, int], h: Hierarchy, chunk: list[int], start_ns: int,
                    rules: QualityRules) -> list[DataQualityAlert]:
    """The chunk's parents against their physical children, all at once (one sparse product gives
    every parent's children's sum); the rare parents with a flagged quarter are then looked at one
    by one for their runs."""
    from scipy import sparse

    q = blk.q.reshape(blk.q.shape[0], -1)
    out: list[DataQualityAlert] = []

    def t(k: int) -> int:
        return start_ns + k * QUARTER_NS

    for i in chunk:
        m = h.meters[i]
        if m.virtual:
            for a, b, total in negative_runs(q[rows[i]], rules):
                pos = sum(s * float(np.nansum(q[rows[h.index[tid]], a:b])) for s, tid in m.terms if s > 0)
                out.append(DataQualityAlert("virtual_negative", m.id, m.org, t(a), t(b), m.parent or "",
                                            tuple(tid for s, tid in m.terms if s < 0), pos, pos - total,
                                            CARRIER_FIELD[m.carrier][1], b - a))
    parents, kids = [], []
    for i in chunk:
        ks = [c for c in h.children(i) if not h.virtual(c)]
        if ks:
            parents.append(i)
            kids.append(ks)
    if not parents:
        return out
    r_idx = np.repeat(np.arange(len(parents)), [len(k) for k in kids])
    c_idx = np.array([rows[c] for ks in kids for c in ks])
    mat = sparse.csr_matrix((np.ones(c_idx.size), (r_idx, c_idx)), shape=(len(parents), q.shape[0]))
    csum = np.asarray(mat @ q)                                    # NaN where a child is unknown
    pq = q[[rows[i] for i in parents]]
    with np.errstate(invalid="ignore"):
        csum -= pq
        flag = csum > rules.excess_share * np.abs(pq) + rules.excess_min
    # only a run of min_quarters flagged quarters makes an alert: AND the flags shifted by 1..n-1
    n = rules.min_quarters
    long_run = flag[:, n - 1:].copy() if flag.shape[1] >= n else np.zeros((flag.shape[0], 0), bool)
    for k in range(1, n):
        long_run &= flag[:, n - 1 - k:flag.shape[1] - k]
    for j in np.flatnonzero(long_run.any(axis=1)):
        i = parents[j]
        m = h.meters[i]
        names = tuple(h.meters[c].id for c in kids[j])
        for a, b, ptot, ctot in children_exceed_parent(pq[j], q[[rows[c] for c in kids[j]]], rules):
            for who in (i, *kids[j]):
                out.append(DataQualityAlert("children_exceed_parent", h.meters[who].id, h.meters[who].org, t(a), t(b),
                                            m.id, names, ptot, ctot, CARRIER_FIELD[m.carrier][1], b - a))
    return out


def compute_energy(read: ChunkReader, meters: Sequence[MeterInfo], first_day: int, n_days: int, working: np.ndarray,
                   factors: FactorSet = FactorSet(), cal: LocalCalendar = LocalCalendar(),
                   buildings: Sequence[tuple[str, str, float, int]] = (),
                   periods: Sequence[Period] = (Period.day, Period.month, Period.year),
                   chunk_rows: int = CHUNK_ROWS, quality: QualityRules = QualityRules(),
                   keep_meter_blocks: bool = False, points: bool = True,
                   provisional: Callable[[int], bool] | None = None) -> EnergyReport:
    """The energy pass over ``meters`` in chunks of whole meter trees: ``read(physical meters)``
    gives their counter readings on a shared axis (times (n,), values (k, n)); each chunk becomes
    15-minute energy (counter rules), its virtual meters, its data-quality alerts, its meters'
    indicators, and its share of every building's and org's quarter sums; then the scopes'
    indicators and the itemised breakdowns. The working set is one chunk plus the scope sums,
    whatever the number of meters. ``points=False`` leaves the report's Points out (tables only).
    ``provisional(period_start_ns)`` says whether a period's year has a provisional calendar (the
    indicator Points carry it as ``provisional_calendar``)."""
    h = Hierarchy(meters)
    nb = n_days * QUARTERS_PER_DAY
    start_ns = int(cal.day_start_ns(first_day))
    b_roll, o_roll = h.rollups()
    sums = [("building", _ScopeSums(b_roll, nb)), ("org", _ScopeSums(o_roll, nb))]
    parts: dict[Period, list[tuple[list[int], IndicatorTable]]] = {p: [] for p in periods}
    events: list = []
    alerts: list[DataQualityAlert] = []
    any_reading = False
    blocks = []
    for chunk in h.tree_chunks(max(1, min(chunk_rows, CHUNK_CELLS // nb))):
        phys = [i for i in chunk if not h.virtual(i)]
        virt = _topo(h, [i for i in chunk if h.virtual(i)])
        order = phys + virt
        rows = {i: r for r, i in enumerate(order)}
        times, values = read([meters[i] for i in phys])
        if times.size:
            any_reading = True
        values = np.asarray(values, dtype=np.float64).reshape(len(phys), times.size)
        blk, ev = block_from_counters(times, values, [meters[i].spec for i in phys], cal, first_day, n_days,
                                      [meters[i].id for i in order], [meters[i].org for i in order],
                                      [meters[i].carrier for i in order], extra_rows=len(virt))
        del values
        events.extend(ev)
        _fill_virtual(blk, rows, h, virt)
        alerts.extend(_quality_alerts(blk, rows, h, chunk, start_ns, quality))
        for period, t in zip(periods, compute_indicators_many(blk, periods, cal, working, factors, scope="meter")):
            parts[period].append((order, t))
        for _, acc in sums:
            acc.add(blk, order)
        if keep_meter_blocks:
            blocks.append((order, blk))
        del blk
    if not any_reading:
        return EnergyReport([], [], [])
    tables: list[IndicatorTable] = []
    meter_tables: dict[Period, IndicatorTable] = {}
    for period in periods:
        t = _concat_tables(parts[period], len(meters))
        if period is Period.month:
            add_changes(t, "consumption_kwh")
        meter_tables[period] = t
        tables.append(t)
    for scope, acc in sums:
        if not acc.rollup.ids:
            continue
        b = acc.block(first_day, n_days)
        for period, t in zip(periods, compute_indicators_many(b, periods, cal, working, factors, scope=scope)):
            if period is Period.month:
                add_changes(t, "consumption_kwh")
            tables.append(t)
            area, occ = areas_for(scope, t.ids, buildings)
            tables.append(combine_carriers(t, area, occ))
        del b
    items = [_item_table(h, meter_tables[p]) for p in periods]
    pts = (to_points(tables, provisional) + item_points(items) + [a.to_point() for a in alerts]) if points else []
    rep = EnergyReport(tables, events, pts, items, alerts)
    if keep_meter_blocks:
        rep.meter_blocks = blocks  # type: ignore[attr-defined]
    return rep


def _concat_tables(parts: list[tuple[list[int], IndicatorTable]], n: int) -> IndicatorTable:
    """The chunks' meter tables as one, rows back in the meters' order."""
    first = parts[0][1]
    pos = np.empty(n, dtype=np.int64)
    order = [i for o, _ in parts for i in o]
    pos[np.asarray(order, dtype=np.int64)] = np.arange(n)
    fields = {k: np.concatenate([t.fields[k] for _, t in parts], axis=0)[pos] for k in first.fields}
    ids = [x for _, t in parts for x in t.ids]
    orgs = [x for _, t in parts for x in t.orgs]
    carriers = [x for _, t in parts for x in t.carriers]
    return IndicatorTable("meter", [ids[p] for p in pos], [orgs[p] for p in pos], [carriers[p] for p in pos],
                          first.period, first.starts_ns, fields, first.factor_set)


def _item_table(h: Hierarchy, meter_table: IndicatorTable) -> ItemTable:
    mat = h.item_matrix()           # built once per hierarchy
    kwh = meter_table.fields["consumption_kwh"]
    cons = np.where(np.isnan(kwh), meter_table.fields["consumption_m3"], kwh)
    v = mat.apply(cons)
    totals = {k[1:]: v[r] for r, k in enumerate(mat.keys) if k[0] == "total"}
    keep = [r for r, k in enumerate(mat.keys) if k[0] != "total"]
    keys = [mat.keys[r] for r in keep]
    c = v[keep]
    share = np.full_like(c, np.nan)
    for j, k in enumerate(keys):
        tot = totals[(k[0], k[1], k[2])]
        np.divide(c[j], tot, out=share[j], where=(tot != 0) & ~np.isnan(tot))
    return ItemTable(meter_table.period, meter_table.starts_ns, keys, [mat.orgs[r] for r in keep], c, share, totals)


ITEM_MEASUREMENT = "energy_item"


def item_points(tables: Sequence[ItemTable]) -> list[Point]:
    """Measurement ``energy_item``: tags ``scope`` (building|org), ``id``, ``org``, ``period``,
    ``carrier``, ``level`` (2 item, 3 sub-item), ``item`` (code, or ``unmetered`` / ``unassigned``);
    fields ``consumption_kwh`` or ``consumption_m3``, ``share`` (of the scope's total, 0..1)."""
    out = []
    for t in tables:
        for r, (kind, sid, carrier, lvl, code) in enumerate(t.keys):
            unit = "consumption_kwh" if CARRIER_FIELD[carrier][1] == "kWh" else "consumption_m3"
            for k in range(len(t.starts_ns)):
                v = t.consumption[r, k]
                if not np.isfinite(v):
                    continue
                f = {unit: float(v)}
                if np.isfinite(t.share[r, k]):
                    f["share"] = float(t.share[r, k])
                out.append(Point(ITEM_MEASUREMENT, {"scope": kind, "id": sid, "org": t.orgs[r], "period": t.period.value,
                                                    "carrier": carrier, "level": str(lvl), "item": code},
                                 f, int(t.starts_ns[k])))
    return out


def buildings_from_site(site) -> list[tuple[str, str, float, int]]:
    return [(b.id, b.org, b.floor_area_m2, b.occupants) for b in site.buildings]


def meters_from_site(site, counter_defaults: dict[str, dict[str, float]] | None = None) -> list[MeterInfo]:
    """``edge.config.Site`` → MeterInfo list. ``counter_defaults``: per meter id, ``CounterSpec``
    fields its device profile implies (rollover, rated_kw, backstep tolerance; the composition
    root derives them, ``edge.app.site.counter_defaults_for``); the meter's own
    ``counter_rollover`` and ``rated_kw`` win."""
    d = counter_defaults or {}
    out = []
    for m in site.meters:
        kw = dict(d.get(m.id, {}))
        if m.counter_rollover is not None:
            kw["rollover"] = m.counter_rollover
        if m.rated_kw is not None:
            kw["rated_kw"] = m.rated_kw
        out.append(MeterInfo(m.id, site.meter_org(m), m.carrier.value, m.building, CounterSpec(**kw), m.parent,
                             m.item, m.terms))
    return out


@dataclass
class BaselineReport:
    """Per meter: the fitted model (baseline period), savings over the reporting period (no
    figure, with the reasons, when either period is insufficient), and the reporting days outside
    the model's prediction interval (only where savings are reported)."""

    models: dict[str, object]
    savings: dict[str, object]
    anomalies: list


def compute_baselines(source: CounterSource, meters: Sequence[MeterInfo], baseline: tuple[dt.date, dt.date],
                      reporting: tuple[dt.date, dt.date], temp_times_ns: np.ndarray, temp_c: np.ndarray,
                      cal: LocalCalendar = LocalCalendar()) -> BaselineReport:
    """CalTRACK daily baselines (``analytics.energy.baseline``) for every meter from the same weather
    series: fit on ``baseline`` (12 months), savings and anomalies on ``reporting``.

    A day's usage counts only when the counter measured it (``counter_measured_days``: at most half
    of the day interpolated across a gap, CalTRACK 2.2.2.1), and a day of zero electricity is
    missing (2.2.1.4). Temperature readings outside the plausible range are left out."""
    meters = [m for m in meters if not m.virtual]   # a virtual meter has no counter of its own

    def daily(first: dt.date, last: dt.date):
        n_days = (last - first).days + 1
        fd = cal.day_of(first)
        s = int(cal.day_start_ns(fd))
        e = s + n_days * NS_PER_DAY
        temp = daily_mean_temperature(temp_times_ns, temp_c, fd, n_days)
        bad_temp = implausible_temperature_days(temp_times_ns, temp_c, fd, n_days)
        months = (np.arange(fd, fd + n_days).astype("datetime64[D]").astype("datetime64[M]").astype(np.int64))
        series = [source.fetch_counter(m.id, CARRIER_FIELD[m.carrier][0], s - QUARTER_NS, e + QUARTER_NS + 1)
                  for m in meters]
        times, values = align_on_grid(series, s - QUARTER_NS, e + QUARTER_NS)
        if times.size == 0:
            return np.full((len(meters), n_days), np.nan), temp, bad_temp, months, fd
        rows = []
        for r, m in enumerate(meters):
            y, _ = daily_consumption(times, values[r], m.spec, cal, fd, n_days)
            y = y[0]
            rt, rv = series[r]
            y = np.where(counter_measured_days(np.asarray(rt)[~np.isnan(rv)], fd, n_days), y, np.nan)
            if m.carrier == "electricity":
                y = np.where(y == 0, np.nan, y)
            rows.append(y)
        return np.stack(rows), temp, bad_temp, months, fd

    yb, tb, badb, months_b, _ = daily(*baseline)
    yr, tr, badr, months_r, fdr = daily(*reporting)
    return _baseline_report(meters, (yb, tb, badb, months_b), (yr, tr, badr, months_r), cal.day_start_ns(fdr + np.arange(yr.shape[1])))


def _baseline_report(meters: Sequence[MeterInfo], base, rep, starts: np.ndarray) -> BaselineReport:
    """Fit on the baseline period's daily use, report savings and anomalous days over the reporting
    period's: ``base`` and ``rep`` are (use (meters, days), mean °C (days,), implausible-temperature
    days, month of each day)."""
    yb, tb, badb, months_b = base
    yr, tr, badr, months_r = rep
    models = fit_daily_models(yb, tb, month_of_day=months_b, implausible_days=badb)
    out_models, out_savings, anomalies = {}, {}, []
    for m, model, y in zip(meters, models, yr):
        out_models[m.id] = model
        s = savings(model, y, tr, month_of_day=months_r, implausible_days=badr)
        out_savings[m.id] = s
        if s.reported:     # an insufficient baseline or period judges no day either
            anomalies.extend(baseline_anomalies(m.id, model, starts, y, tr))
    reported = sum(s.reported for s in out_savings.values())
    log.info("baselines meters=%d insufficient=%d g14_ok=%d savings_reported=%d anomalies=%d", len(meters),
             sum(not x.sufficient for x in models), sum(x.g14_ok and x.sufficient for x in models), reported,
             len(anomalies))
    return BaselineReport(out_models, out_savings, anomalies)


@dataclass
class DailyUse:
    """Each meter's daily use as the energy pass computed it (its ``energy_indicator`` day rows):
    ``first_day`` (local day index) and, per meter id, ``use`` and ``coverage`` over ``n_days`` days
    (NaN where no row). A day counts for a baseline when the counter measured at least half of it
    (``coverage`` >= 0.5, CalTRACK 2.2.2.1, as ``counter_measured_days`` judges raw readings)."""

    first_day: int
    n_days: int
    use: dict[str, np.ndarray] = field(default_factory=dict)
    coverage: dict[str, np.ndarray] = field(default_factory=dict)

    def add(self, meter: str, day_index: np.ndarray, use: np.ndarray, coverage: np.ndarray) -> None:
        """Rows of a meter (day indexes, values); later rows of a day replace earlier ones."""
        u = self.use.setdefault(meter, np.full(self.n_days, np.nan))
        c = self.coverage.setdefault(meter, np.full(self.n_days, np.nan))
        k = np.asarray(day_index, dtype=np.int64) - self.first_day
        ok = (k >= 0) & (k < self.n_days)
        u[k[ok]] = np.asarray(use, dtype=np.float64)[ok]
        c[k[ok]] = np.asarray(coverage, dtype=np.float64)[ok]

    def matrix(self, meters: Sequence[MeterInfo], first: int, n: int) -> np.ndarray:
        """(meters, n) use from local day ``first``: NaN for a day not measured enough, and for a day
        of zero electricity (CalTRACK 2.2.1.4)."""
        out = np.full((len(meters), n), np.nan)
        a, b = first - self.first_day, first - self.first_day + n
        lo, hi = max(a, 0), min(b, self.n_days)
        if hi <= lo:
            return out
        for r, m in enumerate(meters):
            u, c = self.use.get(m.id), self.coverage.get(m.id)
            if u is None:
                continue
            y = np.where(c[lo:hi] >= 0.5, u[lo:hi], np.nan)
            if m.carrier == "electricity":
                y = np.where(y == 0, np.nan, y)
            out[r, lo - a:hi - a] = y
        return out


def baselines_from_days(use: DailyUse, meters: Sequence[MeterInfo], baseline: tuple[dt.date, dt.date],
                        reporting: tuple[dt.date, dt.date], temp_times_ns: np.ndarray, temp_c: np.ndarray,
                        cal: LocalCalendar = LocalCalendar()) -> BaselineReport:
    """``compute_baselines`` from the daily use the energy pass already computed (the service's
    baseline job: no counter is read again), with the same weather rules."""
    meters = [m for m in meters if not m.virtual]

    def period(first: dt.date, last: dt.date):
        n = (last - first).days + 1
        fd = cal.day_of(first)
        months = np.arange(fd, fd + n).astype("datetime64[D]").astype("datetime64[M]").astype(np.int64)
        return (use.matrix(meters, fd, n), daily_mean_temperature(temp_times_ns, temp_c, fd, n),
                implausible_temperature_days(temp_times_ns, temp_c, fd, n), months), fd, n

    base, _, _ = period(*baseline)
    rep, fdr, nr = period(*reporting)
    return _baseline_report(meters, base, rep, cal.day_start_ns(fdr + np.arange(nr)))


def days_to_compute(now_ns: int, last_done: dt.date | None, late_reading_times_ns: Sequence[int] = (),
                    cal: LocalCalendar = LocalCalendar(), settle_s: float = 900.0, backfill_days: int = 1
                    ) -> list[dt.date]:
    """What the scheduler computes on a tick: every local day closed since ``last_done`` (a day
    is closed ``settle_s`` after its local midnight end, so the last readings have arrived), plus
    closed days that received late readings (recomputed: same Point identity, so overwritten).
    With no ``last_done``, the last ``backfill_days`` closed days."""
    settled = cal.local_day_index(int(now_ns - settle_s * 1e9))
    last_closed = int(settled) - 1
    if last_done is None:
        first = last_closed - backfill_days + 1
    else:
        first = cal.day_of(last_done) + 1
    days = set(range(first, last_closed + 1))
    for t in late_reading_times_ns:
        d = int(cal.local_day_index(int(t)))
        if d <= last_closed:
            days.add(d)
    return [cal.date_of(d) for d in sorted(days)]


async def prefetch_counters(query, meters: Sequence[MeterInfo], start_ns: int, end_ns: int,
                            where=None) -> ArraySource:
    """Read every meter's counter field over ``[start_ns, end_ns)`` through the query layer
    (``edge.query.Query``: ``await query.raw("meter", fields, start_ns, end_ns[, where])``) into an
    ``ArraySource`` the pure jobs can use. ``where`` is the caller's ``edge.query.Where`` (e.g.
    the org scope); without one every ``meter`` series is read and filtered here by the ``meter``
    tag. analytics does not import the query layer: it is handed one."""
    fields = sorted({CARRIER_FIELD[m.carrier][0] for m in meters})
    wanted = {(m.id, CARRIER_FIELD[m.carrier][0]) for m in meters}
    series = await (query.raw("meter", fields, start_ns, end_ns) if where is None
                    else query.raw("meter", fields, start_ns, end_ns, where))
    return merge_counter_series(series, wanted)


def merge_counter_series(series, wanted: set[tuple[str, str]], shift_ns: int = 0) -> ArraySource:
    """Query-layer ``Series`` of meter counters into an ``ArraySource`` keyed (meter id, field).

    One meter may come back as several series (a tag changed, e.g. its building): they are
    merged, sorted, and repeated times dropped. ``shift_ns`` relabels every time (window ends)."""
    parts: dict[tuple[str, str], list] = {}
    for s in series:
        key = (s.tags.get("meter", ""), s.field)
        if key in wanted:
            parts.setdefault(key, []).append((np.asarray(s.times_ns, dtype=np.int64) + shift_ns,
                                               np.asarray(s.values, dtype=np.float64)))
    src = ArraySource()
    for key, chunks in parts.items():
        t = np.concatenate([c[0] for c in chunks])
        v = np.concatenate([c[1] for c in chunks])
        order = np.argsort(t, kind="stable")
        t, v = t[order], v[order]
        keep = np.r_[True, np.diff(t) > 0] if len(t) else np.zeros(0, bool)
        src.data[key] = (t[keep], v[keep])
    return src


async def compute_energy_from_query(query, meters: Sequence[MeterInfo], first: dt.date, last: dt.date,
                                    workcal: WorkCalendar = WorkCalendar(), factors: FactorSet = FactorSet(),
                                    cal: LocalCalendar = LocalCalendar(), where=None,
                                    buildings: Sequence[tuple[str, str, float, int]] = ()) -> EnergyReport:
    """``compute_energy_range`` reading through the query layer, chunk by chunk (``LoopSource``);
    the numpy work runs in a thread so the service's event loop keeps serving."""
    import asyncio

    start = cal.midnight_ns(first) - QUARTER_NS
    end = cal.midnight_ns(last) + NS_PER_DAY + QUARTER_NS + 1

    async def fetch(ms: Sequence[MeterInfo]) -> ArraySource:
        return await prefetch_counters(query, ms, start, end, where)

    src = LoopSource(fetch, asyncio.get_running_loop())
    return await asyncio.to_thread(compute_energy_range, src, meters, first, last, workcal, factors, cal, buildings)
