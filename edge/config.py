"""Site configuration: one YAML file describes a site, checked and frozen at start-up.

Every section is a frozen pydantic model with ``extra="forbid"``; units are in field names.
A bad file fails with the file, the line, the object id and the field in the message.
Secrets come from the environment: any string ``${VAR}`` is replaced by ``$VAR``, and the
variables ``EDGE_MQTT_USERNAME``, ``EDGE_MQTT_PASSWORD``, ``EDGE_STORE_PASSWORD``, ``EDGE_STORE_TOKEN``,
``EDGE_UPSTREAM_TOKEN`` and ``EDGE_UPSTREAM_PASSWORD`` override the file's values.
"""

from __future__ import annotations

import os
import re
from enum import Enum
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from edge.errors import ConfigError

ORG_CODE = re.compile(r"^[0-9A-Za-z][0-9A-Za-z_.-]*$")


class Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- org tree and things that belong to it -----------------------------------------------------


def check_org_path(path: str) -> str:
    """An org path is admin-division codes from the province down: ``330000/330100/330106/inst-042``."""
    parts = path.split("/")
    if not parts or any(not ORG_CODE.match(p) for p in parts):
        raise ValueError(f"org path {path!r} must be codes joined by '/', e.g. 330000/330100/330106")
    if any(p in (".", "..") for p in parts):
        raise ValueError(f"org path {path!r} may not contain '.' or '..'")
    return path


def org_within(path: str, scope: str) -> bool:
    """True when ``path`` is ``scope`` or below it (compared segment by segment, never by prefix)."""
    p, s = path.split("/"), scope.split("/")
    return p[: len(s)] == s


class Org(Frozen):
    path: str
    name: str

    _v = field_validator("path")(lambda cls, v: check_org_path(v))

    @property
    def code(self) -> str:
        return self.path.rsplit("/", 1)[-1]

    @property
    def parent(self) -> str | None:
        return self.path.rsplit("/", 1)[0] if "/" in self.path else None


class Building(Frozen):
    id: str
    org: str
    name: str = ""
    floor_area_m2: float = Field(gt=0)
    occupants: int = Field(ge=0, description="用能人数, number of energy users")
    quota_class: Literal["A", "B"] | None = Field(default=None, description="GB/T 51161 office class for the quota check")


class Carrier(str, Enum):
    electricity = "electricity"
    water = "water"
    gas = "gas"
    heat = "heat"


class TransportKind(str, Enum):
    tcp = "tcp"
    rtu = "rtu"
    rtu_over_tcp = "rtu_over_tcp"


class Parity(str, Enum):
    none = "N"
    even = "E"
    odd = "O"


class Transport(Frozen):
    kind: TransportKind = TransportKind.tcp
    host: str | None = None
    port: int | None = Field(default=None, ge=1, le=65535)
    serial_port: str | None = None
    baudrate: int = 9600
    parity: Parity = Parity.none
    stopbits: int = Field(default=1, ge=1, le=2)
    bytesize: int = Field(default=8, ge=5, le=8)

    @model_validator(mode="after")
    def _where(self) -> "Transport":
        if self.kind is TransportKind.rtu:
            if not self.serial_port:
                raise ValueError("an rtu transport needs serial_port (e.g. /dev/ttyUSB0)")
        elif not self.host or not self.port:
            raise ValueError(f"a {self.kind.value} transport needs host and port")
        return self

    def connection_key(self) -> str:
        """Meters with the same key share one conversation (one lock, inter-frame gap)."""
        if self.kind is TransportKind.rtu:
            return f"rtu:{self.serial_port}"
        return f"{self.kind.value}:{self.host}:{self.port}"


class Meter(Frozen):
    id: str
    profile: str
    building: str | None = None
    org: str | None = Field(default=None, description="defaults to the building's org")
    carrier: Carrier = Carrier.electricity
    transport: Transport
    unit_id: int = Field(default=1, ge=0, le=247)
    interval_s: float = Field(default=15.0, gt=0)
    timeout_ms: int = Field(default=1000, gt=0)
    pt_ratio: float = Field(default=1.0, gt=0)
    ct_ratio: float = Field(default=1.0, gt=0)
    registers: tuple[str, ...] | None = Field(default=None, description="subset of the profile's registers; all when omitted")
    counter_rollover: float | None = Field(default=None, gt=0, description="value at which the energy counter wraps to 0, in its unit")
    rated_kw: float | None = Field(default=None, gt=0, description="max plausible rate; faster counter steps are flagged as jumps")


class Circle(Frozen):
    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)
    radius_m: float = Field(gt=0)


class Geofence(Frozen):
    name: str
    org: str | None = None
    circle: Circle | None = None
    polygon: tuple[tuple[float, float], ...] | None = Field(default=None, description="[[lat, lon], ...]")

    @model_validator(mode="after")
    def _shape(self) -> "Geofence":
        if (self.circle is None) == (self.polygon is None):
            raise ValueError("a geofence has exactly one of circle or polygon")
        if self.polygon is not None and len(self.polygon) < 3:
            raise ValueError("a polygon needs at least 3 vertices")
        return self


class Vehicle(Frozen):
    id: str
    plate: str = ""
    org: str
    home: str | None = Field(default=None, description="name of the home geofence")
    in_service: bool = True
    terminal: str | None = Field(default=None, description="JT/T 808 terminal phone number (BCD), when it reports over a gateway")


# --- infrastructure ----------------------------------------------------------------------------


class PayloadFormat(str, Enum):
    json = "json"
    owntracks = "owntracks"
    nmea = "nmea"
    jt808 = "jt808"


class Crs(str, Enum):
    wgs84 = "wgs84"
    gcj02 = "gcj02"


class UnknownVehiclePolicy(str, Enum):
    accept = "accept"
    dead_letter = "dead_letter"


class Topic(Frozen):
    pattern: str
    format: PayloadFormat = PayloadFormat.json
    crs: Crs = Crs.wgs84


class Tls(Frozen):
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None


class MqttProtocol(str, Enum):
    v311 = "3.1.1"
    v5 = "5"


class Mqtt(Frozen):
    broker: str = Field(default="embedded", description="'embedded' (in-process amqtt) or mqtt[s]://host:port")
    embedded_port: int = 1883
    client_id: str = "sensing-edge"
    username: str | None = None
    password: str | None = None
    protocol: MqttProtocol = MqttProtocol.v311
    tls: Tls | None = None
    qos: Literal[0, 1, 2] = 1
    shared_group: str | None = Field(default=None, description="subscribe as $share/GROUP/... to split a fleet")
    topics: tuple[Topic, ...] = (Topic(pattern="vehicles/+/position"),)
    unknown_vehicles: UnknownVehiclePolicy = UnknownVehiclePolicy.accept
    max_speed_kmh: float = 200.0


class StoreKind(str, Enum):
    embedded = "embedded"
    influxdb_v1 = "influxdb_v1"
    influxdb_v2 = "influxdb_v2"


class Store(Frozen):
    kind: StoreKind = StoreKind.embedded
    path: str = "var/store.sqlite"
    retention_days: float | None = None
    url: str | None = None
    database: str = "sensing"
    retention_policy: str | None = None
    username: str | None = None
    password: str | None = None
    org: str | None = None
    bucket: str | None = None
    token: str | None = None
    batch_points: int = Field(default=5000, gt=0)
    flush_interval_ms: int = Field(default=1000, gt=0)
    timeout_ms: int = Field(default=10_000, gt=0)
    retry_cap_s: float = Field(default=10.0, gt=0, description="longest wait between retries while the store is down")

    @model_validator(mode="after")
    def _where(self) -> "Store":
        if self.kind is not StoreKind.embedded and not self.url:
            raise ValueError(f"a {self.kind.value} store needs url (e.g. http://127.0.0.1:8086)")
        if self.kind is StoreKind.influxdb_v2 and not (self.org and self.bucket):
            raise ValueError("an influxdb_v2 store needs org and bucket")
        return self


class Outbox(Frozen):
    path: str = "var/outbox.sqlite"
    max_bytes: int = Field(default=1 << 30, gt=0, description="bound of the log's text: when full, sources that can "
                           "hold (positions) are refused and meter readings thinned, then dropped (counted, recorded)")


class Upstream(Frozen):
    """Push to the provincial platform: indicators (and raw points if asked), a consumer of the outbox's log."""

    url: str
    database: str = "sensing"
    org: str | None = None
    bucket: str | None = Field(default=None, description="set for InfluxDB 2.x/3.x intake; else 1.x /write")
    username: str | None = None
    password: str | None = None
    token: str | None = None
    measurements: tuple[str, ...] = ("energy_indicator", "fleet_indicator")
    raw: bool = Field(default=False, description="also forward raw meter readings and positions")
    max_bytes: int = Field(default=256 << 20, gt=0, description="no longer used (the upstream reads the outbox, "
                           "bounded by outbox.max_bytes); accepted so that earlier site files load")


class Api(Frozen):
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    auth: bool = Field(default=False, description="require API keys; off for the local demo only")
    tile_url: str | None = None
    rate_per_s: float = Field(default=50.0, gt=0, description="requests per second per key (token bucket)")
    rate_burst: float = Field(default=100.0, gt=0)
    upstream: Upstream | None = None


class Analytics(Frozen):
    timezone: str = "Asia/Shanghai"
    workday_start: str = "08:30"
    workday_end: str = "17:30"
    grid_kgco2_per_kwh: float = 0.5617
    holidays_extra: tuple[str, ...] = Field(default=(), description="ISO dates of holidays the calendar lacks")
    workdays_extra: tuple[str, ...] = Field(default=(), description="ISO dates of 调休 working weekends the calendar lacks")
    interval_s: float = Field(default=60.0, gt=0, description="how often today's energy indicators are recomputed")
    fleet_interval_s: float = Field(default=300.0, gt=0, description="how often today's trips and fleet indicators are recomputed")
    settle_s: float = Field(default=900.0, ge=0, description="a day is closed this long after local midnight")
    gas_kgce_per_m3: float | None = Field(default=None, gt=0, description="natural gas factor; default 1.2143 (unconfirmed)")
    weather_csv: str | None = Field(default=None, description="hourly outdoor temperature CSV (time, temp_c) for baselines")


class Segmentation(str, Enum):
    auto = "auto"          # by the ACC bit where the terminal reports it, else by distance and time
    acc = "acc"
    distance = "distance"


class Fleet(Frozen):
    """Trip segmentation, cleaning, indicator and alert parameters (defaults: DOMAIN.md)."""

    segmentation: Segmentation = Segmentation.auto
    stop_radius_m: float = Field(default=200.0, gt=0)
    min_stop_s: float = Field(default=180.0, gt=0)
    max_gap_s: float = Field(default=3600.0, gt=0)
    min_trip_m: float = Field(default=300.0, ge=0)
    min_trip_s: float = Field(default=60.0, ge=0)
    idle_speed_kmh: float = Field(default=3.0, ge=0)
    min_idle_s: float = Field(default=120.0, ge=0)
    jitter_m: float = Field(default=30.0, ge=0)
    parked_radius_m: float = Field(default=100.0, ge=0)
    max_speed_kmh: float = Field(default=200.0, gt=0)
    overspeed_kmh: float = Field(default=100.0, gt=0)
    overspeed_grace_s: float = Field(default=30.0, ge=0)
    long_idle_s: float = Field(default=600.0, gt=0)
    lost_signal_s: float = Field(default=900.0, gt=0)
    night_check: str = Field(default="02:00", pattern=r"^\d{2}:\d{2}$", description="local time a vehicle should be home")
    under_used_threshold: float = Field(default=0.2, ge=0, le=1)
    under_used_weeks: int = Field(default=4, ge=1)


class SiteInfo(Frozen):
    name: str = "site"
    timezone: str = "Asia/Shanghai"


class Site(Frozen):
    site: SiteInfo = SiteInfo()
    profiles_dir: str | None = Field(default=None, description="extra device profiles beside the shipped ones")
    orgs: tuple[Org, ...] = ()
    buildings: tuple[Building, ...] = ()
    meters: tuple[Meter, ...] = ()
    vehicles: tuple[Vehicle, ...] = ()
    geofences: tuple[Geofence, ...] = ()
    mqtt: Mqtt = Mqtt()
    store: Store = Store()
    outbox: Outbox = Outbox()
    api: Api = Api()
    analytics: Analytics = Analytics()
    fleet: Fleet = Fleet()

    def meter_org(self, m: Meter) -> str:
        if m.org:
            return m.org
        b = next(b for b in self.buildings if b.id == m.building)
        return b.org


# --- cross-object checks -----------------------------------------------------------------------


def _cross_check(site: Site) -> list[tuple[tuple, str]]:
    """Checks that span objects. Returns (location, message) pairs; location as pydantic's."""
    errs: list[tuple[tuple, str]] = []
    orgs = {o.path for o in site.orgs}

    def dupes(kind: str, items: tuple, key: str) -> None:
        seen: dict[str, int] = {}
        for i, it in enumerate(items):
            k = getattr(it, key)
            if k in seen:
                errs.append(((kind, i, key), f"duplicate {key} {k!r} (first at {kind}[{seen[k]}])"))
            else:
                seen[k] = i

    dupes("orgs", site.orgs, "path")
    dupes("buildings", site.buildings, "id")
    dupes("meters", site.meters, "id")
    dupes("vehicles", site.vehicles, "id")
    dupes("geofences", site.geofences, "name")
    for i, o in enumerate(site.orgs):
        if o.parent and o.parent not in orgs:
            errs.append((("orgs", i, "path"), f"parent org {o.parent!r} is not declared"))
    for i, b in enumerate(site.buildings):
        if b.org not in orgs:
            errs.append((("buildings", i, "org"), f"unknown org {b.org!r}"))
    buildings = {b.id for b in site.buildings}
    for i, m in enumerate(site.meters):
        if m.building is not None and m.building not in buildings:
            errs.append((("meters", i, "building"), f"unknown building {m.building!r}"))
        if m.building is None and m.org is None:
            errs.append((("meters", i, "org"), "a meter needs a building or an org"))
        if m.org is not None and m.org not in orgs:
            errs.append((("meters", i, "org"), f"unknown org {m.org!r}"))
    fences = {g.name for g in site.geofences}
    for i, v in enumerate(site.vehicles):
        if v.org not in orgs:
            errs.append((("vehicles", i, "org"), f"unknown org {v.org!r}"))
        if v.home is not None and v.home not in fences:
            errs.append((("vehicles", i, "home"), f"unknown geofence {v.home!r}"))
    for i, g in enumerate(site.geofences):
        if g.org is not None and g.org not in orgs:
            errs.append((("geofences", i, "org"), f"unknown org {g.org!r}"))
    return errs


# --- loading -----------------------------------------------------------------------------------

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_SECRET_ENV = {
    ("mqtt", "password"): "EDGE_MQTT_PASSWORD",
    ("mqtt", "username"): "EDGE_MQTT_USERNAME",
    ("store", "password"): "EDGE_STORE_PASSWORD",
    ("store", "token"): "EDGE_STORE_TOKEN",
}
_NESTED_SECRET_ENV = {("api", "upstream", "token"): "EDGE_UPSTREAM_TOKEN",
                      ("api", "upstream", "password"): "EDGE_UPSTREAM_PASSWORD"}


def _line_map(text: str) -> dict[tuple, int]:
    """Map each path in the YAML document (keys and list indexes) to its 1-based line."""
    lines: dict[tuple, int] = {}
    try:
        root = yaml.compose(text)
    except yaml.YAMLError:
        return lines

    def walk(node: Any, path: tuple) -> None:
        lines[path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                lines[path + (k.value,)] = k.start_mark.line + 1
                walk(v, path + (k.value,))
                lines[path + (k.value,)] = k.start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode):
            for i, v in enumerate(node.value):
                walk(v, path + (i,))

    if root is not None:
        walk(root, ())
    return lines


def _expand_env(obj: Any, path: tuple, file: str) -> Any:
    if isinstance(obj, dict):
        return {k: _expand_env(v, path + (k,), file) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_expand_env(v, path + (i,), file) for i, v in enumerate(obj)]
    if isinstance(obj, str) and "${" in obj:
        def sub(m: re.Match) -> str:
            if m.group(1) not in os.environ:
                raise ConfigError(f"environment variable {m.group(1)} is not set",
                                  file=file, field=".".join(map(str, path)))
            return os.environ[m.group(1)]
        return _ENV_REF.sub(sub, obj)
    return obj


def _object_name(raw: Any, loc: tuple) -> str | None:
    """'meters[3] (id=m-17)' for a location inside a list of objects."""
    cur = raw
    name = None
    for i, part in enumerate(loc):
        try:
            cur = cur[part]
        except (KeyError, IndexError, TypeError):
            break
        if isinstance(part, int) and isinstance(cur, dict):
            ident = cur.get("id") or cur.get("name") or cur.get("path")
            label = f"{'.'.join(map(str, loc[:i]))}[{part}]"
            name = f"{label} (id={ident})" if ident is not None else label
    return name


def _field_of(loc: tuple) -> str:
    return ".".join(str(p) for p in loc if not isinstance(p, int)) or "<root>"


def parse_site(text: str, file: str = "<site>") -> Site:
    """Parse and check a site file's text. Raises ``ConfigError`` naming file, line, object, field."""
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        raise ConfigError(f"not valid YAML: {getattr(e, 'problem', e)}", file=file,
                          line=mark.line + 1 if mark else None) from None
    if not isinstance(raw, dict):
        raise ConfigError("a site file is a mapping of sections (site, orgs, meters, ...)", file=file)
    raw = _expand_env(raw, (), file)
    for (section, key), var in _SECRET_ENV.items():
        if var in os.environ:
            raw.setdefault(section, {})
            if isinstance(raw[section], dict):
                raw[section][key] = os.environ[var]
    for (a, b, key), var in _NESTED_SECRET_ENV.items():
        sec = raw.get(a, {}).get(b) if isinstance(raw.get(a), dict) else None
        if var in os.environ and isinstance(sec, dict):
            sec[key] = os.environ[var]
    lines = _line_map(text)

    def line_of(loc: tuple) -> int | None:
        for n in range(len(loc), -1, -1):
            if loc[:n] in lines:
                return lines[loc[:n]]
        return None

    try:
        site = Site.model_validate(raw)
    except ValidationError as e:
        msgs = []
        for err in e.errors():
            loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
            obj = _object_name(raw, loc)
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = f"unknown key {loc[-1]!r}"
            msgs.append(str(ConfigError(msg, file=file, line=line_of(loc), obj=obj, field=_field_of(loc))))
        raise _multi(msgs, file, tuple(e.errors()[0]["loc"]), raw) from None
    errs = _cross_check(site)
    if errs:
        msgs = [str(ConfigError(m, file=file, line=line_of(loc), obj=_object_name(raw, loc), field=_field_of(loc)))
                for loc, m in errs]
        raise _multi(msgs, file, errs[0][0], raw)
    return site


def _multi(msgs: list[str], file: str, loc: tuple, raw: Any) -> ConfigError:
    e = ConfigError("")
    e.args = ("\n".join(msgs),)
    e.file, e.obj, e.field, e.line = file, _object_name(raw, loc), _field_of(loc), None
    e.messages = msgs  # type: ignore[attr-defined]
    return e


def load_site(path: str | os.PathLike) -> Site:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"cannot read: {e.strerror}", file=str(p)) from None
    return parse_site(text, file=str(p))
