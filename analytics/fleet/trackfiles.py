"""Readers of exported track files into ``Tracks``: GPX 1.0/1.1, CSV, NMEA 0183 logs.

Pure parsing (text in, ``Tracks`` and a count of skipped rows per reason out), for ``edge
analytics track`` and for anyone comparing an exported track with ours. Bad rows are skipped and
counted, never fatal; a file with no usable fix at all is a ``TrackFileError``.

- **GPX** (``<trkpt lat lon><time>``, any namespace, so 1.0 and 1.1): ``<speed>`` (GPX 1.0, m/s)
  or an extension element named ``speed`` (m/s, e.g. Garmin's TrackPointExtension) becomes
  ``speed_kmh``; points without a time are skipped (``no_time``). Parsed with the standard
  library's expat-based ElementTree, which expands no external entities (and, with expat >= 2.4,
  resists entity-expansion bombs); no extra dependency.
- **CSV** with a header: ``time,lat,lon`` (``latitude``/``longitude``/``timestamp`` accepted),
  optional ``speed_kmh``, ``odometer_km``, ``acc`` (1/0/true/false), ``vehicle`` (several vehicles in
  one file). ``time`` is ISO 8601 (without an offset: ``naive_offset_s``, default +08:00, the
  site's local time) or Unix seconds / milliseconds.
- **NMEA 0183**: ``$--RMC`` sentences (any talker: GP, GN, BD, GL, GA) give time, date, position,
  speed (knots) and validity; ``$--GGA`` at the same second adds the satellite count. Checksums are
  verified when present; status ``V`` (no fix) is skipped. Text before the ``$`` on a line (log
  prefixes) is ignored; ``#`` lines are comments.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from analytics.fleet.tracks import NS, Tracks, TrackError
from edge.errors import EdgeError

FORMATS = ("gpx", "csv", "nmea")
KNOT_KMH = 1.852


class TrackFileError(EdgeError):
    """A track file that cannot be read at all (unknown format, no usable fix)."""


@dataclass
class FileReport:
    format: str
    rows: int = 0  # candidate rows seen (track points, CSV lines, RMC sentences)
    skipped: dict[str, int] = field(default_factory=dict)

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1


def detect_format(text: str, name: str = "") -> str:
    low = name.lower()
    for ext, fmt in ((".gpx", "gpx"), (".csv", "csv"), (".nmea", "nmea"), (".nma", "nmea"), (".log", "nmea")):
        if low.endswith(ext):
            return fmt
    head = text.lstrip()[:2000]
    if head.startswith("<") and "<gpx" in head:
        return "gpx"
    if any(line.lstrip().startswith("$") for line in head.splitlines()[:20]) or "$GPRMC" in head or "RMC," in head:
        return "nmea"
    return "csv"


def read_track(source: str | Path, fmt: str = "auto", vehicle: str | None = None,
               naive_offset_s: int = 8 * 3600) -> tuple[Tracks, FileReport]:
    """Read a file (path) or text. ``vehicle`` names the track (default: the file's stem)."""
    if isinstance(source, Path):
        text = source.read_text(encoding="utf-8", errors="replace")
        name = source.name
    else:
        text, name = source, ""
    if fmt == "auto":
        fmt = detect_format(text, name)
    if fmt not in FORMATS:
        raise TrackFileError(f"unknown track format {fmt!r}: expected one of {', '.join(FORMATS)} or auto")
    vid = vehicle or (Path(name).stem if name else "track")
    if fmt == "gpx":
        return _gpx(text, vid)
    if fmt == "nmea":
        return _nmea(text, vid)
    return _csv(text, vid, naive_offset_s)


def _build(parts: dict[str, dict[str, list]], report: FileReport) -> Tracks:
    out = []
    for vid, c in parts.items():
        if not c["t"]:
            continue
        t = np.asarray(c["t"], dtype=np.int64)
        order = np.argsort(t, kind="stable")

        def col(name, fill=np.nan, c=c, n=len(t), order=order):
            return np.asarray(c.get(name) or [fill] * n, dtype=float)[order]

        acc = np.asarray(c.get("acc") or [-1] * len(t), dtype=np.int8)[order]
        sat = np.asarray(c.get("sat") or [-1] * len(t), dtype=np.int16)[order]
        try:
            out.append(Tracks.single(vid, t[order], col("lat"), col("lon"), col("speed"), acc, col("odo"), sat))
        except TrackError as e:  # rows were checked one by one; this is a unit mistake in the whole file
            raise TrackFileError(str(e)) from None
    if not out:
        raise TrackFileError(f"no usable fix in the {report.format} file ({report.rows} rows, skipped {report.skipped})")
    return Tracks.concat(out)


def _new() -> dict[str, list]:
    return {"t": [], "lat": [], "lon": [], "speed": [], "odo": [], "acc": [], "sat": []}


def _ok_position(lat: float, lon: float) -> bool:
    return math.isfinite(lat) and math.isfinite(lon) and abs(lat) <= 90 and abs(lon) <= 180


# --- GPX -----------------------------------------------------------------------------------------


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _iso_ns(s: str, naive_offset_s: int = 0) -> int:
    d = dt.datetime.fromisoformat(s.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    if d.tzinfo is None:
        d = d.replace(tzinfo=dt.timezone(dt.timedelta(seconds=naive_offset_s)))
    return (int(d.replace(microsecond=0).timestamp()) * NS) + d.microsecond * 1000


def _gpx(text: str, vid: str) -> tuple[Tracks, FileReport]:
    rep = FileReport("gpx")
    c = _new()
    try:
        root = ET.fromstring(text.encode("utf-8"))
    except ET.ParseError as e:
        raise TrackFileError(f"not a GPX document: {e}") from None
    if _local(root.tag) != "gpx":
        raise TrackFileError(f"not a GPX document: root element <{_local(root.tag)}>")
    for pt in root.iter():
        if _local(pt.tag) != "trkpt":
            continue
        rep.rows += 1
        try:
            lat, lon = float(pt.get("lat", "nan")), float(pt.get("lon", "nan"))
        except ValueError:
            rep.skip("bad_position")
            continue
        if not _ok_position(lat, lon):
            rep.skip("bad_position")
            continue
        t = speed = None
        for ch in pt.iter():
            name = _local(ch.tag)
            if name == "time" and ch.text and t is None:
                try:
                    t = _iso_ns(ch.text)
                except ValueError:
                    t = None
            elif name == "speed" and ch.text:
                try:
                    speed = float(ch.text) * 3.6
                except ValueError:
                    speed = None
        if t is None:
            rep.skip("no_time")
            continue
        if speed is not None and not (math.isfinite(speed) and speed >= 0):
            speed = None
        c["t"].append(t)
        c["lat"].append(lat)
        c["lon"].append(lon)
        c["speed"].append(np.nan if speed is None else speed)
    c.pop("odo"), c.pop("acc"), c.pop("sat")
    return _build({vid: c}, rep), rep


# --- CSV -----------------------------------------------------------------------------------------

_ALIASES = {"time": ("time", "timestamp", "datetime", "gps_time"), "lat": ("lat", "latitude"),
            "lon": ("lon", "lng", "long", "longitude"), "speed_kmh": ("speed_kmh",), "odometer_km": ("odometer_km",),
            "acc": ("acc",), "vehicle": ("vehicle", "vehicle_id", "plate")}


def _csv_time(s: str, naive_offset_s: int) -> int:
    s = s.strip()
    try:
        x = float(s)
    except ValueError:
        return _iso_ns(s, naive_offset_s)
    if not math.isfinite(x):
        raise ValueError("not finite")
    if x > 1e11:  # milliseconds since the epoch
        return int(round(x * 1e6))
    return int(round(x * 1e6)) * 1000


def _csv(text: str, vid: str, naive_offset_s: int) -> tuple[Tracks, FileReport]:
    rep = FileReport("csv")
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if header is None:
        raise TrackFileError("empty CSV file")
    names = [h.strip().lower() for h in header]
    col = {}
    for key, aliases in _ALIASES.items():
        for a in aliases:
            if a in names:
                col[key] = names.index(a)
                break
    missing = [k for k in ("time", "lat", "lon") if k not in col]
    if missing:
        raise TrackFileError(f"CSV header {header!r} lacks {', '.join(missing)}: expected time,lat,lon "
                             "[,speed_kmh,odometer_km,acc,vehicle]")
    parts: dict[str, dict[str, list]] = {}
    for row in reader:
        if not row or all(not x.strip() for x in row):
            continue
        rep.rows += 1
        try:
            t = _csv_time(row[col["time"]], naive_offset_s)
        except (ValueError, IndexError, OverflowError):
            rep.skip("bad_time")
            continue
        try:
            lat, lon = float(row[col["lat"]]), float(row[col["lon"]])
        except (ValueError, IndexError):
            rep.skip("bad_position")
            continue
        if not _ok_position(lat, lon):
            rep.skip("bad_position")
            continue

        def num(key, row=row):
            if key not in col or col[key] >= len(row) or not row[col[key]].strip():
                return np.nan
            try:
                v = float(row[col[key]])
            except ValueError:
                return None
            return v if math.isfinite(v) and v >= 0 else None

        speed, odo = num("speed_kmh"), num("odometer_km")
        if speed is None:
            rep.skip("bad_speed")  # the fix is kept, its speed is not
            speed = np.nan
        if odo is None:
            rep.skip("bad_odometer")
            odo = np.nan
        acc = -1
        if "acc" in col and col["acc"] < len(row):
            a = row[col["acc"]].strip().lower()
            acc = 1 if a in ("1", "true", "on", "yes") else 0 if a in ("0", "false", "off", "no") else -1
        v = row[col["vehicle"]].strip() if "vehicle" in col and col["vehicle"] < len(row) and row[col["vehicle"]].strip() else vid
        c = parts.setdefault(v, _new())
        c["t"].append(t)
        c["lat"].append(lat)
        c["lon"].append(lon)
        c["speed"].append(speed)
        c["odo"].append(odo)
        c["acc"].append(acc)
        c["sat"].append(-1)
    return _build(parts, rep), rep


# --- NMEA ----------------------------------------------------------------------------------------


def _checksum_ok(sentence: str) -> bool | None:
    if "*" not in sentence:
        return None
    body, _, cs = sentence[1:].partition("*")
    x = 0
    for ch in body:
        x ^= ord(ch)
    try:
        return x == int(cs[:2], 16)
    except ValueError:
        return False


def _degrees(v: str, hemi: str) -> float:
    if not v:
        return math.nan
    dot = v.index(".") if "." in v else len(v)
    deg = float(v[:dot - 2]) + float(v[dot - 2:]) / 60.0
    return -deg if hemi in ("S", "W") else deg


def _nmea_time(hms: str) -> float:
    return int(hms[0:2]) * 3600 + int(hms[2:4]) * 60 + float(hms[4:])


def _nmea(text: str, vid: str) -> tuple[Tracks, FileReport]:
    rep = FileReport("nmea")
    c = _new()
    sats: dict[float, int] = {}
    rows: list[tuple[float, int, float, float, float]] = []  # sec of day, day ordinal, lat, lon, speed
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "$" not in line:
            continue
        s = line[line.index("$"):]
        kind = s[3:6]
        if kind not in ("RMC", "GGA"):
            continue
        if kind == "RMC":
            rep.rows += 1
        ok = _checksum_ok(s)
        if ok is False:
            if kind == "RMC":
                rep.skip("bad_checksum")
            continue
        f = s.split("*")[0].split(",")
        try:
            if kind == "GGA":
                if len(f) > 7 and f[1] and f[7]:
                    sats[round(_nmea_time(f[1]), 3)] = int(f[7])
                continue
            if len(f) < 10 or f[2] != "A":
                rep.skip("no_fix")
                continue
            sec = _nmea_time(f[1])
            d = dt.date(2000 + int(f[9][4:6]), int(f[9][2:4]), int(f[9][0:2]))
            lat, lon = _degrees(f[3], f[4]), _degrees(f[5], f[6])
            speed = float(f[7]) * KNOT_KMH if f[7] else np.nan
        except (ValueError, IndexError):
            rep.skip("bad_sentence")
            continue
        if not _ok_position(lat, lon):
            rep.skip("bad_position")
            continue
        rows.append((sec, d.toordinal(), lat, lon, speed))
    epoch = dt.date(1970, 1, 1).toordinal()
    for sec, day, lat, lon, speed in rows:
        c["t"].append(int(round(((day - epoch) * 86400 + sec) * 1e3)) * 1_000_000)
        c["lat"].append(lat)
        c["lon"].append(lon)
        c["speed"].append(speed if speed >= 0 else np.nan)
        c["sat"].append(sats.get(round(sec, 3), -1))
    c.pop("odo"), c.pop("acc")
    return _build({vid: c}, rep), rep
