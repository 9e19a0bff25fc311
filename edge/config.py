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
from datetime import date
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


OrgLevel = Literal["province", "city", "district", "street", "institution"]
TOWNSHIP_CODE = re.compile(r"^[0-9]{9}$")  # 乡镇/街道: the 6-digit county code and 3 digits of its own


def org_level(path: str) -> str:
    """What an org is, from its path when the site file does not say (``Org.level``): the first three
    levels are province, city and district (county, 区/县), a 9-digit code below them a street or
    township (街道/乡镇), anything else an institution (a public body with its own code)."""
    parts = path.split("/")
    if len(parts) <= 3:
        return ("province", "city", "district")[len(parts) - 1]
    return "street" if TOWNSHIP_CODE.match(parts[-1]) else "institution"


class Org(Frozen):
    path: str
    name: str
    level: OrgLevel | None = Field(default=None, description="province, city, district, street or institution; "
                                                              "by default from the path (edge.config.org_level)")

    _v = field_validator("path")(lambda cls, v: check_org_path(v))

    @property
    def kind(self) -> str:
        """The org's level: as the site file says, else from its path."""
        return self.level or org_level(self.path)

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
    turnaround_ms: float = Field(default=20.0, ge=0,
                                 description="a device's time from the end of a request to the start of its answer "
                                             "(10-50 ms on real meters); used by the RS-485 bus budget")

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


ITEM_CODE = re.compile(r"^0[1-9][0-9A-Z]{3}$")
_FORMULA_TERM = re.compile(r"^[A-Za-z0-9_.:-]+$")


def parse_formula(text: str) -> tuple[tuple[float, str], ...]:
    """``"hq-main - hq-hvac - hq-lighting"`` → ((1, hq-main), (-1, hq-hvac), (-1, hq-lighting)).

    Meter ids joined by ``+`` and ``-`` written with spaces around them (ids may contain ``-``)."""
    tokens = text.split()
    if not tokens:
        raise ValueError("a formula names at least one meter")
    out: list[tuple[float, str]] = []
    sign = 1.0
    expect_term = True
    for tok in tokens:
        if expect_term:
            if tok in ("+", "-"):
                if out or tok == "+":
                    raise ValueError(f"formula {text!r}: two operators in a row at {tok!r}")
                sign = -1.0
                continue
            if not _FORMULA_TERM.match(tok):
                raise ValueError(f"formula {text!r}: {tok!r} is not a meter id (write operators with spaces around them)")
            out.append((sign, tok))
            expect_term = False
        else:
            if tok not in ("+", "-"):
                raise ValueError(f"formula {text!r}: expected + or - before {tok!r}")
            sign = 1.0 if tok == "+" else -1.0
            expect_term = True
    if expect_term:
        raise ValueError(f"formula {text!r} ends with an operator")
    return tuple(out)


class Meter(Frozen):
    """A physical meter (``profile`` and ``transport``) or a virtual one (``formula``)."""

    id: str
    profile: str | None = None
    building: str | None = None
    org: str | None = Field(default=None, description="defaults to the building's org; a meter without a building "
                                                      "(a campus incomer) names its org")
    carrier: Carrier = Carrier.electricity
    transport: Transport | None = None
    parent: str | None = Field(default=None, description="the meter this one sits behind (same carrier, same org)")
    item: str | None = Field(default=None, description="分项 code of what it measures (01A00 lighting and sockets, "
                                                       "01B00 HVAC, ...; docs/energy.md)")
    formula: str | None = Field(default=None, description="a virtual meter: meter ids joined by + and -, "
                                                          "e.g. 'hq-main - hq-hvac - hq-lighting'")
    unit_id: int = Field(default=1, ge=0, le=247)
    interval_s: float = Field(default=15.0, gt=0)
    timeout_ms: int = Field(default=1000, gt=0)
    pt_ratio: float = Field(default=1.0, gt=0)
    ct_ratio: float = Field(default=1.0, gt=0)
    registers: tuple[str, ...] | None = Field(default=None, description="subset of the profile's registers; all when omitted")
    counter_rollover: float | None = Field(default=None, gt=0,
                                           description="value at which the energy counter restarts at 0, in its unit "
                                                       "(a display of 99999999.9 kWh rolls over at 100000000); "
                                                       "defaults to the register's range (2^32 raw x scale)")
    rated_kw: float | None = Field(default=None, gt=0, description="max plausible rate; faster counter steps are flagged "
                                                                   "as jumps (defaults to the profile's power range)")

    @field_validator("item", mode="before")
    @classmethod
    def _item_number(cls, v: Any) -> Any:
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            # YAML reads an unquoted 02000 as a number (octal 1024, even): the code cannot be recovered
            raise ValueError(f"item {v!r} was read as a number: write the code in quotes, e.g. item: \"02000\"")
        return v

    @field_validator("item")
    @classmethod
    def _item(cls, v: str | None) -> str | None:
        if v is not None and not ITEM_CODE.match(v):
            raise ValueError(f"item {v!r} is not a 分项 code (five characters such as 01A00, 01B10, 02000)")
        return v

    @field_validator("formula")
    @classmethod
    def _formula(cls, v: str | None) -> str | None:
        if v is not None:
            parse_formula(v)
        return v

    @model_validator(mode="after")
    def _kind(self) -> "Meter":
        if self.formula is not None:
            if self.profile is not None or self.transport is not None:
                raise ValueError("a virtual meter (formula) has no profile or transport")
        elif self.profile is None or self.transport is None:
            raise ValueError("a meter needs a profile and a transport (or a formula, for a virtual meter)")
        return self

    @property
    def virtual(self) -> bool:
        return self.formula is not None

    @property
    def terms(self) -> tuple[tuple[float, str], ...]:
        """The formula's (sign, meter id) terms; empty for a physical meter."""
        return parse_formula(self.formula) if self.formula is not None else ()


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


class MileageSource(str, Enum):
    """Which figure a vehicle's headline mileage is (docs/fleet.md "The odometer")."""

    auto = "auto"  # the odometer when trusted and agreeing with GPS over the trips, else GPS
    gps = "gps"
    odometer = "odometer"  # the odometer whenever it has a figure


class Vehicle(Frozen):
    id: str
    plate: str = ""
    org: str
    home: str | None = Field(default=None, description="name of the home geofence")
    in_service: bool = True
    mileage_source: MileageSource | None = Field(default=None, description="overrides fleet.mileage_source for this vehicle")
    terminal: str | None = Field(default=None, pattern=r"^[0-9]{1,20}$",
                                 description="JT/T 808 terminal phone number (the BCD digits of its header; leading zeros "
                                             "do not matter), over the TCP access server (jt808:) or a gateway over MQTT")


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
    embedded_host: str = Field(default="127.0.0.1", description="where the embedded broker listens: loopback unless "
                               "terminals or gateways on the network publish to it (then 0.0.0.0 or an interface address)")
    embedded_port: int = Field(default=1883, ge=0, le=65535, description="the embedded broker's port; 0: any free port")
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
    max_age_days: float = Field(default=7.0, gt=0, description="oldest fix accepted (gateways forward stored fixes late)")


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
    measurements: tuple[str, ...] = ("energy_indicator", "energy_item", "fleet_indicator")
    raw: bool = Field(default=False, description="also forward raw meter readings and positions")
    max_bytes: int = Field(default=256 << 20, gt=0, description="no longer used (the upstream reads the outbox, "
                           "bounded by outbox.max_bytes); accepted so that earlier site files load")


class TileCrs(str, Enum):
    """The datum a map's tiles are drawn in (positions are stored in WGS-84)."""

    wgs84 = "wgs84"    # OpenStreetMap, 天地图 (CGCS2000, within centimetres of WGS-84), most local tile servers
    gcj02 = "gcj02"    # Amap (高德), Tencent: mainland China's obfuscated datum (GCJ-02, 火星坐标)


class Api(Frozen):
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    auth: bool = Field(default=False, description="require API keys; off for the local demo only")
    tile_url: str | None = Field(default=None, description="the fleet map's tiles, {z}/{x}/{y} (and {s}) in a Web Mercator "
                                 "grid; none: a coordinate grid (docs/api.md, 'The map')")
    tile_overlay_url: str | None = Field(default=None, description="a second tile layer drawn over the first (天地图's "
                                         "labels, cva_w)")
    tile_subdomains: str = Field(default="abc", min_length=1, description="the letters or digits {s} takes")
    tile_attribution: str = Field(default="", max_length=300, description="shown in the map's corner, as the provider asks")
    tile_crs: TileCrs = Field(default=TileCrs.wgs84, description="datum the tiles are drawn in; gcj02 (Amap, Tencent): "
                              "the dashboard asks the API for positions in GCJ-02 so tracks line up")
    tile_max_zoom: int = Field(default=18, ge=1, le=22)
    rate_per_s: float = Field(default=50.0, gt=0, description="requests per second per key (token bucket)")
    rate_burst: float = Field(default=100.0, gt=0)
    auth_failures_burst: int = Field(default=10, ge=1, description="failed key checks a client address (and a key id) "
                                     "may make before 429, without hashing")
    auth_failure_refill_s: float = Field(default=10.0, gt=0, description="then one more attempt every this many seconds")
    audit_max_rows: int = Field(default=100_000, ge=100, description="the audit table keeps its newest rows; "
                                "older ones are deleted and counted")
    upstream: Upstream | None = None


class Registration(str, Enum):
    known = "known"  # only terminals listed as vehicles[].terminal
    open = "open"    # any terminal; an unlisted one is stored under its phone number, org "unknown"


class AuthCodes(str, Enum):
    issued = "issued"  # only codes this edge issued at registration (0x8100)
    adopt = "adopt"    # a terminal with no code on record is admitted with the code it presents, which is kept
    # (a fleet moved from another platform, whose terminals authenticate without registering again)


class ProxyProtocol(str, Enum):
    off = "off"
    v1 = "v1"  # HAProxy's PROXY protocol v1 line (``send-proxy``): the terminal's own address behind a balancer


class Jt808(Frozen):
    """The JT/T 808 access server: vehicle terminals over TCP (docs/gps.md, "Terminals over TCP")."""

    listen: str = Field(default="0.0.0.0:6808", description="host:port the terminals are configured with; port 0 picks one")
    registration: Registration = Registration.known
    auth_codes: AuthCodes = AuthCodes.issued
    auth_store: str = Field(default="var/jt808_terminals.sqlite", description="auth codes issued, kept across restarts")
    auth_secret: str | None = Field(default=None, description="shared by several edges behind a load balancer: auth "
                                                              "codes are derived from it, so any edge accepts a code "
                                                              "another issued (set it from the environment: ${VAR})")
    heartbeat_s: float = Field(default=60.0, gt=0, description="the heartbeat interval set on the terminals (parameter 0x0001)")
    idle_multiple: float = Field(default=3.0, ge=1, description="silent for heartbeat_s x this: offline, connection "
                                                               "closed, lost_signal raised")
    handshake_timeout_s: float = Field(default=30.0, gt=0, description="from connect to a successful authentication")
    frame_timeout_s: float = Field(default=30.0, gt=0, description="a frame begun must be complete within this")
    max_connections: int = Field(default=20_000, gt=0)
    max_per_address: int = Field(default=256, gt=0, description="connections from one address (carrier NAT puts many "
                                                                "terminals behind one)")
    max_frame_bytes: int = Field(default=4096, ge=2100, description="escaped frame size limit (the standard's largest is about 2,100)")
    max_age_report_days: float = Field(default=30.0, gt=0, description="oldest fix accepted in a 0x0200 report "
                                                                       "(terminals resend stored fixes as reports too)")
    max_age_batch_days: float = Field(default=60.0, gt=0, description="oldest fix accepted in a 0x0704 batch (blind-area backlog)")
    live_lag_s: float = Field(default=300.0, gt=0, description="a fix older than this on arrival is marked backlog=true")
    max_future_s: float = Field(default=300.0, ge=0, description="a fix further ahead of our clock is refused")
    max_speed_kmh: float = Field(default=200.0, gt=0)
    proxy_protocol: ProxyProtocol = ProxyProtocol.off
    commit_window_ms: float = Field(default=50.0, ge=0, le=1000, description="positions of every terminal arriving "
                                                                              "within this share one outbox commit "
                                                                              "(acknowledged after it): each commit "
                                                                              "is an fsync, about 0.6 ms of CPU")

    @field_validator("listen")
    @classmethod
    def _listen(cls, v: str) -> str:
        host, _, port = v.rpartition(":")
        if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError(f"listen {v!r}: expected host:port, e.g. 0.0.0.0:6808 or [::]:6808")
        return v

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])

    @property
    def idle_s(self) -> float:
        return self.heartbeat_s * self.idle_multiple


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

    @field_validator("holidays_extra", "workdays_extra", mode="before")
    @classmethod
    def _iso_dates(cls, v: Any) -> Any:
        """YAML reads an unquoted 2027-01-01 as a date: take it as the operator meant it; refuse a
        string that is not an ISO date here, at start, not in the first indicator pass."""
        if not isinstance(v, (list, tuple)):
            return v
        out = []
        for x in v:
            if isinstance(x, date):
                x = x.isoformat()
            elif isinstance(x, str):
                try:
                    date.fromisoformat(x)
                except ValueError:
                    raise ValueError(f"{x!r} is not an ISO date (YYYY-MM-DD)") from None
            out.append(x)
        return tuple(out)


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
    parked_radius_m: float = Field(default=150.0, ge=0, description="a vehicle reported standing may drift this far and stay put")
    max_speed_kmh: float = Field(default=200.0, gt=0)
    speed_window_s: float = Field(default=30.0, gt=0, description="speeds derived from positions are taken over this window")
    mileage_source: MileageSource = MileageSource.auto
    odometer_tolerance_pct: float = Field(default=5.0, ge=0, description="GPS and odometer differ beyond this share")
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
    jt808: Jt808 | None = None

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
    buildings = {b.id: b for b in site.buildings}
    for i, m in enumerate(site.meters):
        if m.building is not None and m.building not in buildings:
            errs.append((("meters", i, "building"), f"unknown building {m.building!r}"))
        b = buildings.get(m.building) if m.building is not None else None
        if b is not None and m.org is not None and m.org in orgs and not org_within(m.org, b.org):
            # a building's totals count all its meters: one of another org would show in the figures of
            # the building's org (and building minus org total would give that org's consumption exactly)
            errs.append((("meters", i, "org"), f"org {m.org!r} is not building {b.id!r}'s org {b.org!r} or below it: "
                                               "a building's energy figures count every meter in it; drop `building` "
                                               "or give the meter the building's org"))
        if m.building is None and m.org is None:
            errs.append((("meters", i, "org"), "a meter needs a building or an org"))
        if m.org is not None and m.org not in orgs:
            errs.append((("meters", i, "org"), f"unknown org {m.org!r}"))
    errs += _hierarchy_check(site)
    fences = {g.name for g in site.geofences}
    for i, v in enumerate(site.vehicles):
        if v.org not in orgs:
            errs.append((("vehicles", i, "org"), f"unknown org {v.org!r}"))
        if v.home is not None and v.home not in fences:
            errs.append((("vehicles", i, "home"), f"unknown geofence {v.home!r}"))
    terminals: dict[str, int] = {}
    for i, v in enumerate(site.vehicles):
        if v.terminal is not None:
            t = v.terminal.lstrip("0") or "0"
            if t in terminals:
                errs.append((("vehicles", i, "terminal"), f"terminal {v.terminal!r} is also vehicles[{terminals[t]}]'s"))
            else:
                terminals[t] = i
    for i, g in enumerate(site.geofences):
        if g.org is not None and g.org not in orgs:
            errs.append((("geofences", i, "org"), f"unknown org {g.org!r}"))
    return errs


def _hierarchy_check(site: Site) -> list[tuple[tuple, str]]:
    """How meters sit behind each other (``parent``) and what virtual meters are made of (``formula``).

    A parent has the same carrier and the same org as the meters behind it (a meter's consumption
    counts only within its own org's scopes); parent chains have no cycle. A virtual meter sits
    behind a parent and is computed from that parent and meters behind it, so no scope can count
    it together with a meter it is made of; virtual meters do not depend on each other in a circle."""
    errs: list[tuple[tuple, str]] = []
    index = {m.id: i for i, m in enumerate(site.meters)}
    by_id = {m.id: m for m in site.meters}
    buildings = {b.id: b.org for b in site.buildings}

    def org_of(m: Meter) -> str | None:
        if m.org is not None:
            return m.org
        return buildings.get(m.building) if m.building is not None else None

    for i, m in enumerate(site.meters):
        if m.parent is None:
            continue
        p = by_id.get(m.parent)
        if p is None:
            errs.append((("meters", i, "parent"), f"unknown parent meter {m.parent!r}"))
        elif p.id == m.id:
            errs.append((("meters", i, "parent"), "a meter cannot sit behind itself"))
        elif p.carrier is not m.carrier:
            errs.append((("meters", i, "parent"), f"parent {p.id!r} measures {p.carrier.value}, this meter "
                                                  f"{m.carrier.value}: a meter sits behind one of its own carrier"))
        elif org_of(p) != org_of(m):
            errs.append((("meters", i, "parent"), f"parent {p.id!r} belongs to org {org_of(p)!r}, this meter to "
                                                  f"{org_of(m)!r}: a meter's consumption counts only in its own org, "
                                                  f"so it sits behind a meter of the same org"))
    reported: set[str] = set()
    for m in site.meters:
        seen = [m.id]
        cur = by_id.get(m.parent) if m.parent else None
        while cur is not None and cur.id != m.id and cur.id not in seen:
            seen.append(cur.id)
            cur = by_id.get(cur.parent) if cur.parent else None
        if cur is not None and cur.id == m.id and m.id not in reported and len(seen) > 1:
            reported.update(seen)
            errs.append((("meters", index[m.id], "parent"), "parent chain forms a cycle: "
                         + " -> ".join(seen + [m.id])))

    def behind(x: str, anc: str) -> bool:
        """``x`` is ``anc`` or sits (directly or not) behind it."""
        hops = 0
        cur: str | None = x
        while cur is not None and hops <= len(by_id):
            if cur == anc:
                return True
            nxt = by_id.get(cur)
            cur = nxt.parent if nxt is not None else None
            hops += 1
        return False

    for i, m in enumerate(site.meters):
        if not m.virtual:
            continue
        if m.parent is None:
            errs.append((("meters", i, "parent"), "a virtual meter names its parent: the meter whose consumption "
                                                  "it splits (its formula is made of that meter and meters behind it)"))
        for _, t in m.terms:
            tm = by_id.get(t)
            if tm is None:
                errs.append((("meters", i, "formula"), f"unknown meter {t!r} in the formula"))
            elif t == m.id:
                errs.append((("meters", i, "formula"), "a virtual meter cannot be made of itself"))
            elif tm.carrier is not m.carrier:
                errs.append((("meters", i, "formula"), f"{t!r} measures {tm.carrier.value}, this meter "
                                                       f"{m.carrier.value}: carriers are never mixed"))
            elif org_of(tm) != org_of(m):
                errs.append((("meters", i, "formula"), f"{t!r} belongs to org {org_of(tm)!r}, this meter to "
                                                       f"{org_of(m)!r}"))
            elif m.parent is not None and m.parent in by_id and not behind(t, m.parent):
                errs.append((("meters", i, "formula"), f"{t!r} is neither the parent {m.parent!r} nor behind it: "
                                                       f"a virtual meter is computed inside its parent's tree, so no "
                                                       f"total counts it together with what it is made of"))
            elif behind(t, m.id):
                errs.append((("meters", i, "formula"), f"{t!r} sits behind this virtual meter: it cannot also be "
                                                       f"one of its terms"))
    # virtual meters made of virtual meters: no circle
    state: dict[str, int] = {}

    def visit(mid: str, path: list[str]) -> None:
        state[mid] = 1
        for _, t in by_id[mid].terms:
            tm = by_id.get(t)
            if tm is None or not tm.virtual:
                continue
            if state.get(t) == 1:
                errs.append((("meters", index[mid], "formula"), "virtual meters depend on each other in a circle: "
                             + " -> ".join(path[path.index(t):] + [t]) if t in path else f"circle through {t!r}"))
            elif state.get(t) is None:
                visit(t, path + [t])
        state[mid] = 2

    for m in site.meters:
        if m.virtual and m.id not in state:
            visit(m.id, [m.id])
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
    except ValueError as e:  # PyYAML builds unquoted dates itself: 2027-13-45 raises from datetime
        raise ConfigError(f"not valid YAML: {e} (a date that does not exist?)", file=file) from None
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
