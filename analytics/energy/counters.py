"""Consumption from cumulative counters (active_energy_import_kwh, water_volume_m3, ...).

A counter's reading only ever grows, so consumption is the sum of deltas between readings,
never a raw reading. Each interval between two consecutive valid readings gets a status, by a
stated rule (the ``rule`` text of each ``CounterEvent``):

- ``ok``: delta ≥ 0 and plausible.
- ``backstep`` (noise): a small negative step (|delta| ≤ ``backstep_tolerance`` +
  ``backstep_relative`` × the reading: float rounding, a meter re-reading a register): counted 0, and the counter is *held* at the level before it, so
  the next ok interval counts from there (100.00, 99.98, 100.10 counts 0.10, not 0.12).
- ``wrap``: the register rolled over at its maximum (``rollover``, in the counter's unit: the
  register's range, 2^32 raw × scale for a uint32, or the meter's own display maximum such as
  100,000,000 kWh for 99999999.9): the previous reading was in the top ``wrap_zone`` of the range
  and the new one in the bottom; delta = rollover − previous + current.
- ``replaced`` (a meter replaced or reset to zero): any other negative step to a reading near
  zero: at most what ``rated_kw`` allows over the interval, or without a rating at most
  ``restart_zone`` of the previous reading. A new segment starts; with a rating the new reading is
  counted (the new register counted up from zero), without one the interval counts 0. The old
  meter's last minutes are not known and not invented.
- ``reset``: any other negative step (neither a wrap nor near zero): a new segment starts at the
  new reading; the interval counts 0 (nothing subtracted, nothing invented).
- ``jump``: delta larger than ``rated_kw`` × dt × ``jump_margin`` (what the meter's rating allows
  in that time): flagged; excluded from consumption unless ``keep_jumps``.
- ``glitch`` (one reading out of line: a communication error decoding garbage): a reading whose
  steps to its neighbours go opposite ways, one of them flagged (jump, reset, replaced, wrap),
  while its neighbours agree with each other (a plausible step from one to the other). The
  reading is dropped and the interval across it counted like any other.
- ``gap`` is a separate flag: the interval lasted longer than ``max_gap_s``. Its (measured)
  energy is real; it is either spread linearly over the gap (``GapPolicy.spread``) or put in
  the bin of the reading that closes the gap (``GapPolicy.last_bin``). Either way the bins of a
  gap have coverage 0, so a gap is visible, and the total is what the counter says.

None of the rules can give a negative count, and with a rating none can give more than the meter
could measure in the time.

Everything works on a 1-D series or a 2-D block (meters × samples) sharing one time axis, with
NaN for a missing reading, so 1,000 meters are processed at once.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import Enum, IntEnum
from functools import cached_property

import numpy as np

from analytics.periods import NS_PER_HOUR, NS_PER_S, QUARTER_NS


class Status(IntEnum):
    none = 0        # no interval ends here (first reading, or missing reading)
    ok = 1
    backstep = 2
    wrap = 3
    reset = 4
    jump = 5
    replaced = 6


class GapPolicy(str, Enum):
    spread = "spread"
    last_bin = "last_bin"


UINT32_MAX = 2**32


@dataclass(frozen=True, slots=True)
class CounterSpec:
    """How to read one meter's counter. Units are the counter's (kWh, m3)."""

    rollover: float | None = None        # value at which the register wraps to 0; None: never wraps
    rated_kw: float | None = None        # max plausible rate (unit per hour); None: no jump check
    jump_margin: float = 1.5
    backstep_tolerance: float = 0.05
    backstep_relative: float = 0.0       # plus this share of the reading (float32 registers lose digits as they grow)
    wrap_zone: float = 0.1               # prev ≥ (1−zone)·rollover and cur ≤ zone·rollover
    max_gap_s: float = 1800.0
    keep_jumps: bool = False
    restart_zone: float = 0.01           # without a rating: "near zero" is at most this share of the previous reading
    glitches: bool = True                # drop a single reading out of line (see the module's rules)


@dataclass(frozen=True, slots=True)
class CounterEvent:
    """A data-quality event found in a counter series, with its evidence."""

    kind: str            # wrap | replaced | reset | jump | backstep | glitch | gap
    row: int             # meter row in the block (0 for a 1-D series)
    start_ns: int        # time of the reading before
    end_ns: int          # time of the reading after
    before: float
    after: float
    delta: float         # what was counted for the interval
    rule: str


@dataclass(frozen=True)
class CounterDeltas:
    """Per reading: the interval that ends at it. Shapes like the input values (2-D: m × n)."""

    times_ns: np.ndarray      # (n,)
    delta: np.ndarray         # counted delta, 0 where nothing is counted
    status: np.ndarray        # Status codes (int8)
    gap: np.ndarray           # bool: interval longer than max_gap_s
    valid: np.ndarray         # bool: reading present
    # sparse bookkeeping found while classifying (2-D row, column indexes), reused downstream:
    after_missing: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None  # (row, col, prev col)
    flagged: tuple[np.ndarray, np.ndarray] | None = None  # every non-ok or gap interval, row-major
    none_at: tuple[np.ndarray, np.ndarray] | None = None  # (row, col ≥ 1) where no interval ends
    glitches: tuple = ()      # (row, col of the dropped reading, col before, col after), found first

    @cached_property
    def dt_ns(self) -> np.ndarray:
        """Length of the interval that ends at each reading (int64 ns, shaped like ``delta``), 0
        where none ends. Built on first use: the aligned binning never needs the whole array."""
        t = self.times_ns
        dt_row = np.zeros(t.size, dtype=np.int64)
        dt_row[1:] = np.diff(t)
        has = self.status != Status.none
        if self.delta.ndim == 2 and self.after_missing is not None:
            dt = np.multiply(has, dt_row)
            fr, fc, pc = self.after_missing
            dt[fr, fc] = t[fc] - t[pc]
            return dt
        prev = np.maximum(_prev_valid_index(self.valid), 0)
        return np.where(has, t - t[prev], 0)

    def _dt_at(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """``dt_ns[rows, cols]`` without building the whole array (unless it is built already)."""
        if "dt_ns" in self.__dict__:
            return np.atleast_2d(self.dt_ns)[rows, cols]
        t = self.times_ns
        st = np.atleast_2d(self.status)[rows, cols]
        valid = np.atleast_2d(self.valid)
        prev = np.zeros(rows.size, dtype=np.int64)
        for r in np.unique(rows):
            sel = rows == r
            prev[sel] = _prev_valid_index(valid[r])[cols[sel]]
        return np.where(st != Status.none, t[cols] - t[np.maximum(prev, 0)], 0)

    def events(self, values: np.ndarray, spec: CounterSpec) -> list[CounterEvent]:
        """The non-ok intervals as events (evidence: readings before and after, rule)."""
        v = np.atleast_2d(values)
        st = np.atleast_2d(self.status)
        gap = np.atleast_2d(self.gap)
        d = np.atleast_2d(self.delta)
        t = self.times_ns
        out: list[CounterEvent] = []
        rules = {
            Status.backstep: f"negative step within tolerance {spec.backstep_tolerance:g}"
                             + (f" + {spec.backstep_relative:.2g} x reading" if spec.backstep_relative else "")
                             + ": counted 0, counter held at the level before it",
            Status.wrap: f"register rolled over at {spec.rollover}: counted rollover - before + after",
            Status.replaced: ("negative step to a reading near zero: meter replaced or reset, new segment, "
                              + ("the new reading counted (within rated_kw x time)" if spec.rated_kw is not None
                                 else f"interval counted 0 (no rated_kw to bound it; near zero = at most "
                                      f"{spec.restart_zone:g} of the reading before)")),
            Status.reset: "negative step, neither a rollover nor near zero: new segment, interval counted 0",
            Status.jump: f"delta above rated_kw {spec.rated_kw} x time x {spec.jump_margin}"
                         + (" (kept)" if spec.keep_jumps else ": excluded"),
        }
        if self.flagged is not None:
            rows, cols = self.flagged
        else:
            rows, cols = np.nonzero((st >= Status.backstep) | gap)
        dts = self._dt_at(np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64)).tolist()
        for r, c, dt in zip(rows.tolist(), cols.tolist(), dts):
            start = int(t[c] - dt)
            j = int(np.searchsorted(t, start))
            before = float(v[r, j])
            s = Status(int(st[r, c]))
            if s >= Status.backstep:
                out.append(CounterEvent(s.name, r, start, int(t[c]), before, float(v[r, c]), float(d[r, c]),
                                        rules[s]))
            if gap[r, c]:
                out.append(CounterEvent("gap", r, start, int(t[c]), before, float(v[r, c]), float(d[r, c]),
                                        f"no reading for {dt / NS_PER_S:.0f} s > max_gap_s {spec.max_gap_s:.0f}"))
        for r, c, p, n in self.glitches:
            out.append(CounterEvent("glitch", r, int(t[p]), int(t[n]), float(v[r, p]), float(v[r, c]), 0.0,
                                    f"one reading out of line ({float(v[r, c]):g} between {float(v[r, p]):g} and "
                                    f"{float(v[r, n]):g}): dropped, the interval across it counted"))
        return out


def _prev_valid_index(valid: np.ndarray) -> np.ndarray:
    """For each position, the index of the previous valid reading (−1 when none)."""
    n = valid.shape[-1]
    idx = np.where(valid, np.arange(n), -1)
    last = np.maximum.accumulate(idx, axis=-1)
    prev = np.full_like(last, -1)
    prev[..., 1:] = last[..., :-1]
    return prev


def _after_missing(valid: np.ndarray, miss_flat: np.ndarray | None = None
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Readings that follow a run of missing ones and have an earlier valid reading: their
    (row, column) and the column of that earlier reading. Works on the sparse missing positions
    (``miss_flat``: the flat, row-major indexes of the missing readings, when already known)."""
    n = valid.shape[1]
    flat = np.flatnonzero(~valid) if miss_flat is None else miss_flat   # flat: far cheaper than 2-D nonzero
    miss_r, miss_c = np.divmod(flat, n)
    nxt = miss_c + 1
    keep = nxt < n
    fr, fc = miss_r[keep], nxt[keep]
    keep = valid[fr, fc]
    fr, fc = fr[keep], fc[keep]
    run_start = np.ones(flat.size, dtype=bool)
    run_start[1:] = flat[1:] != flat[:-1] + 1
    starts = flat[run_start]
    k = np.searchsorted(starts, fr * n + fc - 1, side="right") - 1
    pc = starts[k] - fr * n - 1
    keep = pc >= 0                    # else the run began the row: a first reading, no interval
    return fr[keep], fc[keep], pc[keep]


def _nonzero2(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.nonzero`` of a 2-D mask, via the flat indexes (2-D nonzero is ~30x slower)."""
    return np.divmod(np.flatnonzero(mask), mask.shape[1])


def counter_deltas(times_ns: np.ndarray, values: np.ndarray, spec: CounterSpec | None = None,
                   out: np.ndarray | None = None, *, glitch_pass: bool = True) -> CounterDeltas:
    """Classify every interval between consecutive valid readings and compute counted deltas.

    ``times_ns`` int64 (n,) strictly increasing; ``values`` float (n,) or (m, n), NaN = missing.

    Written for 35 M values at a time: the common case (an interval between neighbouring
    readings, delta ≥ 0, plausible) costs a few whole-array passes; everything rare (missing
    readings, negative steps, jumps, gaps) is found once and handled on its sparse positions.
    ``out``: an (m, n) float64 buffer for the deltas (the result's ``delta`` is it), so a caller
    going through a block in chunks reuses one buffer instead of faulting in a fresh one each time.
    """
    spec = spec or CounterSpec()
    t = np.asarray(times_ns, dtype=np.int64)
    v_in = np.asarray(values, dtype=np.float64)
    if t.ndim != 1 or v_in.shape[-1] != t.shape[0]:
        raise ValueError(f"times {t.shape} and values {v_in.shape} do not line up")
    if t.size > 1 and np.any(np.diff(t) <= 0):
        raise ValueError("times must be strictly increasing")
    one_d = v_in.ndim == 1
    v = np.atleast_2d(v_in)
    m, n = v.shape
    valid = np.isnan(v)
    miss_flat = np.flatnonzero(valid)             # missing readings are sparse: found once, flat
    np.logical_not(valid, out=valid)
    dt_row = np.zeros(n, dtype=np.int64)
    dt_row[1:] = np.diff(t)
    raw = np.empty((m, n)) if out is None else out
    if raw.shape != (m, n) or raw.dtype != np.float64:
        raise ValueError(f"out must be float64 {(m, n)}, not {raw.dtype} {raw.shape}")
    raw[:, :1] = 0.0
    np.subtract(v[:, 1:], v[:, :-1], out=raw[:, 1:])
    gap_row = dt_row > spec.max_gap_s * NS_PER_S
    if not miss_flat.size:
        has = np.ones((m, n), dtype=bool)
        has[:, :1] = False
        fr = fc = pc = np.empty(0, dtype=np.int64)
        none_r = none_c = np.empty(0, dtype=np.int64)
    else:
        has = valid.copy()
        has[:, :1] = False                        # a row's first reading ends no interval ...
        late = np.flatnonzero(~valid[:, 0])       # ... also when the row starts with missing ones
        late = late[valid[late].any(axis=1)]
        late_c = np.argmax(valid[late], axis=1)
        has[late, late_c] = False
        fr, fc, pc = _after_missing(valid, miss_flat)
        raw[fr, fc] = v[fr, fc] - v[fr, pc]
        # no interval ends at a missing reading or a first reading: zero them where they are
        miss_r, miss_c = np.divmod(miss_flat, n)
        raw[miss_r, miss_c] = 0.0
        raw[late, late_c] = 0.0
        sel = miss_c > 0
        none_r = np.concatenate([miss_r[sel], late])
        none_c = np.concatenate([miss_c[sel], late_c])

    dt_after = t[fc] - t[pc]              # intervals across missing readings: longer than dt_row
    status = has.astype(np.int8)          # Status.ok where an interval ends, Status.none elsewhere
    delta = raw
    per_ns = spec.rated_kw * spec.jump_margin / NS_PER_HOUR if spec.rated_kw is not None else None
    allowed_row = dt_row * per_ns + spec.backstep_tolerance if per_ns is not None else None
    over_r = over_c = None
    limit = allowed_row if allowed_row is not None else np.full(n, np.inf)
    if raw.flags.c_contiguous and not np.signbit(limit).any():
        # one pass finds both the negative steps and the steps over the limit: as unsigned
        # integers, non-negative floats keep their order and negative ones (sign bit) are larger
        cand = np.flatnonzero(raw.view(np.uint64) > limit.view(np.uint64)[None, :])
        cr, cc = np.divmod(cand, n)
        cd = raw.reshape(-1)[cand]
        sel = cd < 0
        neg_r, neg_c = cr[sel], cc[sel]
        sel = cd > limit[cc]
        over_r, over_c = cr[sel], cc[sel]
    else:
        neg_r, neg_c = _nonzero2(raw < 0)
    if neg_r.size:
        d = raw[neg_r, neg_c]
        cur = v[neg_r, neg_c]
        prev = cur - d
        back = d >= -(spec.backstep_tolerance + spec.backstep_relative * np.abs(prev))
        st = np.where(back, np.int8(Status.backstep), np.int8(Status.reset))
        counted = np.zeros_like(d)
        if spec.rollover is not None:
            r = spec.rollover
            wrap = ~back & (prev >= (1 - spec.wrap_zone) * r) & (cur <= spec.wrap_zone * r)
            st[wrap] = Status.wrap
            counted[wrap] = r - prev[wrap] + cur[wrap]
        rest = np.flatnonzero(st == Status.reset)
        if rest.size:                 # near zero: the meter was replaced (or reset to zero)
            c_r = cur[rest]
            if per_ns is not None:
                lim = _interval_ns(neg_r[rest], neg_c[rest], dt_row, fr, fc, dt_after, n) * per_ns + spec.backstep_tolerance
                near = rest[(c_r >= 0) & (c_r <= lim)]
                counted[near] = cur[near]
            else:
                near = rest[(c_r >= 0) & (c_r <= spec.restart_zone * prev[rest])]
            st[near] = Status.replaced
        status[neg_r, neg_c] = st
        delta[neg_r, neg_c] = counted
        held = back                   # backsteps: the next ok interval counts from the level before them
        held_d = d[held]
    jr = jc = np.empty(0, dtype=np.int64)
    if allowed_row is not None:
        # an interval after missing readings is longer than dt_row, so this finds a superset
        if over_r is None:
            jr, jc = _nonzero2(delta > allowed_row[None, :])
        else:                         # the steps over the limit, and the negative ones counted above it (wraps)
            big = delta[neg_r, neg_c] > allowed_row[neg_c]
            keys = np.unique(np.concatenate([over_r * n + over_c, neg_r[big] * n + neg_c[big]]))
            jr, jc = keys // n, keys % n
        if jr.size:
            dt_j = dt_row[jc]
            if fr.size:                   # (fr, fc) are in row-major order
                am_keys = fr * n + fc
                k = np.minimum(np.searchsorted(am_keys, jr * n + jc), am_keys.size - 1)
                hit = am_keys[k] == jr * n + jc
                dt_j[hit] = dt_after[k[hit]]
            allowed = dt_j * per_ns + spec.backstep_tolerance
            st = status[jr, jc]
            j = (delta[jr, jc] > allowed) & ((st == Status.ok) | (st == Status.wrap))
            jr, jc = jr[j], jc[j]
            status[jr, jc] = Status.jump
            if not spec.keep_jumps:
                delta[jr, jc] = 0.0
    if neg_r.size and held.any():
        _hold_backsteps(delta, status, valid, neg_r[held], neg_c[held], held_d)
    if glitch_pass and spec.glitches and (neg_r.size or jr.size):
        found = _find_glitches(t, v, valid, status, spec, per_ns, np.concatenate([neg_r, jr]),
                               np.concatenate([neg_c, jc]))
        if found:
            clean = np.array(v_in, dtype=np.float64)
            c2 = np.atleast_2d(clean)
            for r, c, _, _ in found:
                c2[r, c] = np.nan
            res = counter_deltas(t, clean, spec, out, glitch_pass=False)
            return replace(res, glitches=tuple(found))
    flag_r = [neg_r]
    flag_c = [neg_c]
    if spec.rated_kw is not None and jr.size:
        flag_r.append(jr)
        flag_c.append(jc)
    if gap_row.any():
        gap = np.broadcast_to(gap_row, (m, n)) & has
        gr, gc = _nonzero2(gap)
        flag_r.append(gr)
        flag_c.append(gc)
    else:
        gap = np.zeros((m, n), dtype=bool)
    if fr.size:
        g = dt_after > spec.max_gap_s * NS_PER_S
        gap[fr, fc] = g
        flag_r.append(fr[g])
        flag_c.append(fc[g])
    keys = np.unique(np.concatenate(flag_r).astype(np.int64) * n + np.concatenate(flag_c))
    flagged = (keys // n, keys % n)
    if one_d:
        return CounterDeltas(t, delta[0], status[0], gap[0], valid[0], None,
                             (np.zeros_like(flagged[1]), flagged[1]))
    return CounterDeltas(t, delta, status, gap, valid, (fr, fc, pc), flagged, (none_r, none_c))


def _interval_ns(rr: np.ndarray, cc: np.ndarray, dt_row: np.ndarray, fr: np.ndarray, fc: np.ndarray,
                 dt_after: np.ndarray, n: int) -> np.ndarray:
    """Length of the intervals ending at (rr, cc): the step before the column, or, after missing
    readings, back to the last valid one ((fr, fc) row-major with their lengths ``dt_after``)."""
    dtv = dt_row[cc].copy()
    if fr.size:
        am = fr * n + fc
        k = np.minimum(np.searchsorted(am, rr * n + cc), am.size - 1)
        hit = am[k] == rr * n + cc
        dtv[hit] = dt_after[k[hit]]
    return dtv


def _hold_backsteps(delta: np.ndarray, status: np.ndarray, valid: np.ndarray, br: np.ndarray, bc: np.ndarray,
                    bd: np.ndarray) -> None:
    """After a run of backsteps the counter is held at the level before it: the next ok interval
    counts from there (its delta plus the run's negative steps, never below 0)."""
    rows_cols: dict[int, np.ndarray] = {}
    i = 0
    while i < br.size:
        r = int(br[i])
        cols = rows_cols.get(r)
        if cols is None:
            cols = rows_cols[r] = np.flatnonzero(valid[r])
        carry = float(bd[i])
        c = int(bc[i])
        # consecutive backsteps of one row add up
        while i + 1 < br.size and br[i + 1] == r:
            k = int(np.searchsorted(cols, c)) + 1
            if k < cols.size and cols[k] == bc[i + 1]:
                i += 1
                c = int(bc[i])
                carry += float(bd[i])
            else:
                break
        k = int(np.searchsorted(cols, c)) + 1
        if k < cols.size and status[r, cols[k]] == Status.ok:
            delta[r, cols[k]] = max(0.0, delta[r, cols[k]] + carry)
        i += 1


_SUSPECT = (Status.wrap, Status.reset, Status.jump, Status.replaced)


def _find_glitches(t: np.ndarray, v: np.ndarray, valid: np.ndarray, status: np.ndarray, spec: CounterSpec,
                   per_ns: float | None, cand_r: np.ndarray, cand_c: np.ndarray) -> list[tuple[int, int, int, int]]:
    """Single readings out of line, found around the flagged intervals: (row, col of the reading,
    col of the reading before, col of the reading after)."""
    tol = spec.backstep_tolerance
    cols_of: dict[int, np.ndarray] = {}
    found: dict[tuple[int, int], tuple[int, int, int, int]] = {}

    def plausible(r: int, a: int, b: int) -> bool:
        d = v[r, b] - v[r, a]
        return bool(d >= -tol and (per_ns is None or d <= per_ns * (t[b] - t[a]) + tol))

    def out_of_line(r: int, p: int, c: int, nx: int) -> bool:
        s1, s2 = v[r, c] - v[r, p], v[r, nx] - v[r, c]
        return bool(abs(s1) > tol and abs(s2) > tol and (s1 > 0) != (s2 > 0) and plausible(r, p, nx))

    for r, c in zip(cand_r.tolist(), cand_c.tolist()):
        if status[r, c] not in _SUSPECT:
            continue
        cols = cols_of.get(r)
        if cols is None:
            cols = cols_of[r] = np.flatnonzero(valid[r])
        k = int(np.searchsorted(cols, c))
        if k < 1 or k >= cols.size or cols[k] != c:
            continue
        p = int(cols[k - 1])
        if k + 1 < cols.size and out_of_line(r, p, c, int(cols[k + 1])):
            found[(r, c)] = (r, c, p, int(cols[k + 1]))
        elif k >= 2 and out_of_line(r, int(cols[k - 2]), p, c):
            found[(r, p)] = (r, p, int(cols[k - 2]), c)
    return sorted(found.values())


@dataclass(frozen=True)
class BinnedEnergy:
    """Energy per fixed bin (default 15 min), (m, nbins) or (nbins,); NaN where no reading covers
    the bin's edges. ``coverage`` is the fraction of each bin inside ok intervals (0 in gaps,
    resets and excluded jumps)."""

    start_ns: int
    bin_ns: int
    energy: np.ndarray
    coverage: np.ndarray


def bin_energy(d: CounterDeltas, start_ns: int, n_bins: int, bin_ns: int = QUARTER_NS,
               gap_policy: GapPolicy = GapPolicy.spread, aligned_fast_path: bool = True,
               out: tuple[np.ndarray, np.ndarray] | None = None) -> BinnedEnergy:
    """Distribute counted deltas over bins ``[start_ns + k·bin_ns, +bin_ns)``.

    The counted energy is a clean cumulative curve through the valid readings; the energy of a
    bin is that curve at its end minus at its start, interpolated linearly between readings (an
    interval that straddles a bin edge is split in proportion to time). Edges before the first
    or after the last reading give NaN: energy is never extrapolated. When the readings sit
    exactly on the edges, a vectorised path gives the same result (``aligned_fast_path=False``
    forces the general one). ``out`` (energy, coverage) arrays of the result's shape are filled
    in place on the aligned path (saves a copy of a large block).
    """
    edges = start_ns + np.arange(n_bins + 1, dtype=np.int64) * bin_ns
    one_d = d.delta.ndim == 1
    delta = np.atleast_2d(d.delta)
    valid = np.atleast_2d(d.valid)
    status = np.atleast_2d(d.status)
    gap = np.atleast_2d(d.gap)
    m = delta.shape[0]
    if aligned_fast_path and d.times_ns.size == edges.size and bool(np.array_equal(d.times_ns, edges)):
        energy, coverage = _bin_aligned(delta, status, gap, valid, gap_policy,
                                        None if one_d else d.after_missing, out,
                                        None if one_d else d.flagged, None if one_d else d.none_at)
        if one_d:
            return BinnedEnergy(start_ns, bin_ns, energy[0], coverage[0])
        return BinnedEnergy(start_ns, bin_ns, energy, coverage)
    dtn = np.atleast_2d(d.dt_ns)
    energy = np.full((m, n_bins), np.nan)
    coverage = np.zeros((m, n_bins))
    ef = edges.astype(np.float64)
    # ok, backstep and wrap intervals are covered: status 1..3 (uint8 arithmetic wraps 0 to 255)
    good = (status.view(np.uint8) - np.uint8(1)) <= 2
    if gap.any():
        good &= ~gap
    row_valid = valid.all(axis=1)
    row_plain = row_valid & good[:, 1:].all(axis=1)   # every interval ok: coverage is the time axis
    tf_all = d.times_ns.astype(np.float64)
    aligned = d.times_ns.size == edges.size and bool(np.array_equal(d.times_ns, edges))
    cov_plain_bins = np.diff(np.interp(np.clip(ef, tf_all[0], tf_all[-1]), tf_all,
                                       np.cumsum(np.diff(tf_all, prepend=tf_all[:1])))) / bin_ns
    for r in range(m):
        cum_r = np.cumsum(delta[r])
        if row_valid[r]:
            tf, cum, g = tf_all, cum_r, gap[r]
        else:
            sel = valid[r]
            if not sel.any():
                continue
            tf, cum, g = tf_all[sel], cum_r[sel], gap[r][sel]
        if aligned and row_valid[r] and not (gap_policy is GapPolicy.last_bin and g.any()):
            energy[r] = np.diff(cum)
        else:
            # a bin partly covered by readings counts the energy measured in it (coverage < 1);
            # only bins wholly outside the readings are unknown
            outside = (ef[1:] <= tf[0]) | (ef[:-1] >= tf[-1])
            e = np.interp(np.clip(ef, tf[0], tf[-1]), tf, cum)
            if gap_policy is GapPolicy.last_bin and g.any():
                k = np.searchsorted(tf, ef, side="right")
                inside = (k > 0) & (k < tf.size)
                kk = np.clip(k, 0, tf.size - 1)
                hold = inside & g[kk] & (tf[np.maximum(kk - 1, 0)] < ef)
                e[hold] = cum[kk[hold] - 1]
            en = np.diff(e)
            en[outside] = np.nan
            energy[r] = en
        if row_plain[r]:
            coverage[r] = cov_plain_bins
            continue
        cov = np.cumsum(np.where(good[r], dtn[r], 0), dtype=np.float64)
        if not row_valid[r]:
            cov = cov[valid[r]]
        coverage[r] = np.diff(np.interp(np.clip(ef, tf[0], tf[-1]), tf, cov)) / bin_ns
    if one_d:
        return BinnedEnergy(start_ns, bin_ns, energy[0], coverage[0])
    return BinnedEnergy(start_ns, bin_ns, energy, coverage)


def _bin_aligned(delta: np.ndarray, status: np.ndarray, gap: np.ndarray, valid: np.ndarray,
                 gap_policy: GapPolicy, after_missing=None, out=None, flagged=None,
                 none_at=None) -> tuple[np.ndarray, np.ndarray]:
    """``bin_energy`` when the readings sit exactly on the bin edges (what the jobs' alignment
    produces): bin k is the interval ending at reading k+1, so no interpolation is needed; an
    interval across missing readings is spread over its bins in equal parts (they are equally
    long) or put in its last bin, exactly as the general path does.

    With ``flagged`` (every interval that is not ok or is a gap) and ``none_at`` (where no
    interval ends) from ``counter_deltas``, the rare cases are fixed where they are instead of
    with whole-array masks: elsewhere status is none (0) or ok (1), which is the coverage."""
    if flagged is not None and none_at is not None:
        good = None
        if out is None:
            energy = delta[:, 1:].copy()
            coverage = status[:, 1:].astype(np.float64)
        else:
            energy, coverage = out
            energy[...] = delta[:, 1:]
            np.copyto(coverage, status[:, 1:], casting="unsafe")
        fl_r, fl_c = flagged
        sel = fl_c > 0
        fl_r, fl_c = fl_r[sel], fl_c[sel]
        st = status[fl_r, fl_c].view(np.uint8)
        coverage[fl_r, fl_c - 1] = ((st - np.uint8(1)) <= 2) & ~gap[fl_r, fl_c]
        nr, nc = none_at
        energy[nr, nc - 1] = np.nan           # before the first / after the last reading, or inside a run
    else:
        good = (status.view(np.uint8) - np.uint8(1)) <= 2
        if gap.any():
            good &= ~gap
        if out is None:
            energy = delta[:, 1:].copy()
            coverage = good[:, 1:].astype(np.float64)
        else:
            energy, coverage = out
            energy[...] = delta[:, 1:]
            coverage[...] = good[:, 1:]
        if valid.all():
            return energy, coverage
        has = status[:, 1:] != Status.none
        np.copyto(energy, np.nan, where=~has)        # before the first / after the last reading, or inside a run
    fr, fc, pc = after_missing if after_missing is not None else _after_missing(valid)
    if fr.size:
        length = fc - pc                          # bins pc .. fc-1 belong to the interval
        total = int(length.sum())
        offs = np.repeat(np.cumsum(length) - length, length)
        cols = np.repeat(pc, length) + (np.arange(total) - offs)
        rows = np.repeat(fr, length)
        dl = delta[fr, fc]
        if gap_policy is GapPolicy.last_bin:
            vals = np.zeros(total)
            last = np.cumsum(length) - 1
            g = gap[fr, fc]
            vals[last] = dl
            spread = np.repeat(~g, length)
            vals = np.where(spread, np.repeat(dl / length, length), vals)
        else:
            vals = np.repeat(dl / length, length)
        energy[rows, cols] = vals
        g_fr = good[fr, fc] if good is not None else (((status[fr, fc].view(np.uint8) - np.uint8(1)) <= 2)
                                                       & ~gap[fr, fc])
        coverage[rows, cols] = np.repeat(g_fr, length).astype(np.float64)
    return energy, coverage
