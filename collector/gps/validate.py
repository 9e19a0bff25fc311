"""Validation of decoded positions (pure: no I/O, the time is handed in).

Two layers:

- ``check_point`` looks at one point alone: (0, 0) ("null island", a terminal without a fix
  that still reports), time too far in the future or the past, speed above the configured
  maximum.
- ``Tracker`` remembers the last accepted fix and the recent timestamps of every vehicle:
  a point with a timestamp already seen is a ``duplicate``; a point that would need more than
  ``max_speed_kmh`` to reach from the last fix is an ``impossible_jump``. After
  ``JUMP_RESET`` consecutive jumps that agree with each other the vehicle is taken to have
  really moved (a tow, a terminal moved to another car) and the track restarts there.

The tracker's state changes only in ``commit``: the subscriber checks a batch, commits it to
the outbox, and only then commits the tracker, so a failed commit leaves nothing half-seen.
"""

from __future__ import annotations

import math
from array import array
from dataclasses import dataclass, field
from typing import Iterable, Sequence

from edge.errors import PayloadError
from edge.point import Point

MAX_FUTURE_S = 300.0
MAX_PAST_S = 7 * 86400.0
NULL_ISLAND_DEG = 1e-6
JUMP_SLACK_M = 200.0  # GPS noise and multipath allowance on top of max speed x time
JUMP_RESET = 3
RECENT = 256  # timestamps remembered per vehicle for duplicate detection
_NO_TIMES = [-(2**63)] * RECENT  # an empty slot: no real fix is that old


def haversine_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    r = 6_371_008.8
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * r * math.asin(min(1.0, math.sqrt(a)))


def check_point(p: Point, now_ns: int, *, max_speed_kmh: float = 200.0,
                max_future_s: float = MAX_FUTURE_S, max_past_s: float = MAX_PAST_S) -> None:
    """Raise ``PayloadError`` when the point alone is implausible."""
    lat, lon = p.fields["lat"], p.fields["lon"]
    if abs(lat) < NULL_ISLAND_DEG and abs(lon) < NULL_ISLAND_DEG:  # type: ignore[arg-type]
        raise PayloadError("zero_position", "lat=0 lon=0")
    dt_s = (p.time_ns - now_ns) / 1e9
    if dt_s > max_future_s:
        raise PayloadError("time_in_future", f"{dt_s:.0f} s ahead")
    if -dt_s > max_past_s:
        raise PayloadError("time_too_old", f"{-dt_s:.0f} s old")
    sp = p.fields.get("speed_kmh")
    if isinstance(sp, (int, float)) and not isinstance(sp, bool) and sp > max_speed_kmh:
        raise PayloadError("speed_implausible", f"{sp} km/h > {max_speed_kmh}")


M_PER_DEG = 6_371_008.8 * math.pi / 180  # haversine_m's radius: metres per degree of arc


@dataclass(slots=True)
class _Track:
    time_ns: int
    lat: float
    lon: float
    # the last RECENT accepted times, a ring of int64 allocated whole at first sight: a vehicle's
    # memory is the same after its first fix as after a day (a soak must not see it fill up)
    recent: array = field(default_factory=lambda: array("q", _NO_TIMES))
    pos: int = 0
    jumps: tuple = ()  # consecutive rejected (time_ns, lat, lon)

    def seen(self, t: int) -> bool:
        # every remembered time is <= time_ns (the newest accepted): a newer fix needs no search
        return t <= self.time_ns and t in self.recent


@dataclass(slots=True)
class _Stage:
    """What a batch would change for one vehicle: applied to its track only on ``commit``."""

    base: _Track | None
    time_ns: int
    lat: float
    lon: float
    jumps: tuple  # immutable: a stage shares its track's until it changes them
    new_times: list = field(default_factory=list)

    def seen(self, t: int) -> bool:
        return t in self.new_times or (self.base is not None and self.base.seen(t))


@dataclass(frozen=True, slots=True)
class Verdict:
    accepted: tuple[Point, ...]
    rejected: tuple[tuple[Point, PayloadError], ...]
    staged: dict


class Tracker:
    def __init__(self, max_speed_kmh: float = 200.0) -> None:
        self.max_speed_kmh = max_speed_kmh
        self._tracks: dict[str, _Track] = {}

    def __len__(self) -> int:
        return len(self._tracks)

    def check(self, points: Sequence[Point]) -> Verdict:
        """Sort points into accepted and rejected (with a reason). State changes on ``commit``."""
        staged: dict[str, _Stage] = {}
        tracks = self._tracks
        acc: list[Point] = []
        rej: list[tuple[Point, PayloadError]] = []
        max_mps = self.max_speed_kmh / 3.6
        for p in points:
            vid = p.tags.get("vehicle", "")
            f, t = p.fields, p.time_ns
            lat, lon = float(f["lat"]), float(f["lon"])  # type: ignore[arg-type]
            st = staged.get(vid)
            if st is None:
                base = tracks.get(vid)
                if base is None:
                    staged[vid] = _Stage(None, t, lat, lon, (), [t])
                    acc.append(p)
                    continue
                st = staged[vid] = _Stage(base, base.time_ns, base.lat, base.lon, base.jumps, [])
                if base.seen(t):
                    rej.append((p, PayloadError("duplicate", f"vehicle {vid} time_ns {t}")))
                    continue
            elif st.seen(t):
                rej.append((p, PayloadError("duplicate", f"vehicle {vid} time_ns {t}")))
                continue
            dt = abs(t - st.time_ns) / 1e9
            limit = max_mps * dt + JUMP_SLACK_M
            # a path along the meridian, then the parallel, is never shorter than the great circle:
            # within the limit by that bound, the haversine is not needed
            if (abs(lat - st.lat) + abs(lon - st.lon)) * M_PER_DEG > limit:
                dist = haversine_m(st.lat, st.lon, lat, lon)
                if dist > limit:
                    if self._jumps_agree(st.jumps, t, lat, lon):
                        st.jumps = (*st.jumps, (t, lat, lon))
                    else:
                        st.jumps = ((t, lat, lon),)
                    if len(st.jumps) < JUMP_RESET:
                        rej.append((p, PayloadError("impossible_jump",
                                                    f"vehicle {vid}: {dist:.0f} m in {dt:.0f} s")))
                        continue
                    # the vehicle really is over there now: restart the track at the new place
            st.jumps = ()
            if t >= st.time_ns:
                st.time_ns, st.lat, st.lon = t, lat, lon
            st.new_times.append(t)
            acc.append(p)
        return Verdict(tuple(acc), tuple(rej), staged)

    def _jumps_agree(self, jumps: tuple, t: int, lat: float, lon: float) -> bool:
        if not jumps:
            return True
        t0, la0, lo0 = jumps[-1]
        dt = abs(t - t0) / 1e9
        return haversine_m(la0, lo0, lat, lon) <= self.max_speed_kmh / 3.6 * dt + JUMP_SLACK_M

    def commit(self, verdict: Verdict) -> None:
        tracks = self._tracks
        for vid, st in verdict.staged.items():
            tr = tracks.get(vid)
            if tr is None:
                tr = tracks[vid] = _Track(st.time_ns, st.lat, st.lon)
            tr.time_ns, tr.lat, tr.lon, tr.jumps = st.time_ns, st.lat, st.lon, st.jumps
            recent, pos = tr.recent, tr.pos
            for t in st.new_times:
                recent[pos] = t
                pos = (pos + 1) % RECENT
            tr.pos = pos

    def forget(self, vehicles: Iterable[str]) -> None:
        for v in vehicles:
            self._tracks.pop(v, None)
