// The fleet map on Leaflet (vendored: /static/vendor/leaflet): tiles from the site's api.tile_url (天地图,
// a local tile server, or a GCJ-02 provider: then every position and geofence is asked for in GCJ-02),
// and without tiles, or when they fail to load (offline), a coordinate grid as the background.

const L = window.L;
const STATUS_COLORS = { moving: "#2e8b57", idle: "#d4a017", parked: "#6b7785", offline: "#c0392b", unknown: "#6b7785" };

/** Graticule: lines of latitude and longitude at a round step, labelled in degrees (WGS-84 or GCJ-02). */
const Graticule = L.Layer.extend({
  onAdd(map) {
    this._map = map;
    this._canvas = L.DomUtil.create("canvas", "graticule");
    map.getPane("grid").appendChild(this._canvas);
    map.on("move zoom resize viewreset", this._redraw, this);
    this._redraw();
  },
  onRemove(map) {
    map.off("move zoom resize viewreset", this._redraw, this);
    L.DomUtil.remove(this._canvas);
  },
  _redraw() {
    const map = this._map, size = map.getSize(), c = this._canvas;
    const ratio = window.devicePixelRatio || 1;
    c.width = size.x * ratio; c.height = size.y * ratio;
    c.style.width = size.x + "px"; c.style.height = size.y + "px";
    L.DomUtil.setPosition(c, map.containerPointToLayerPoint([0, 0]));
    const ctx = c.getContext("2d");
    ctx.scale(ratio, ratio);
    ctx.fillStyle = "#f7f9fb"; ctx.fillRect(0, 0, size.x, size.y);
    const b = map.getBounds();
    const span = Math.max(b.getEast() - b.getWest(), b.getNorth() - b.getSouth());
    const steps = [10, 5, 2, 1, 0.5, 0.2, 0.1, 0.05, 0.02, 0.01, 0.005, 0.002, 0.001, 0.0005];
    const step = steps.find((s) => span / s >= 4) || steps[steps.length - 1];
    const dec = Math.max(0, -Math.floor(Math.log10(step)));
    ctx.strokeStyle = "#dde3ea"; ctx.lineWidth = 1; ctx.fillStyle = "#8a96a3"; ctx.font = "11px sans-serif";
    for (let lon = Math.ceil(b.getWest() / step) * step; lon <= b.getEast(); lon += step) {
      const x = Math.round(map.latLngToContainerPoint([b.getCenter().lat, lon]).x) + 0.5;
      ctx.beginPath(); ctx.moveTo(x, 0); ctx.lineTo(x, size.y); ctx.stroke();
      ctx.fillText(`${lon.toFixed(dec)}°E`, x + 3, size.y - 5);
    }
    for (let lat = Math.ceil(b.getSouth() / step) * step; lat <= b.getNorth(); lat += step) {
      const y = Math.round(map.latLngToContainerPoint([lat, b.getCenter().lng]).y) + 0.5;
      ctx.beginPath(); ctx.moveTo(0, y); ctx.lineTo(size.x, y); ctx.stroke();
      ctx.fillText(`${lat.toFixed(dec)}°N`, 3, y - 4);
    }
  },
});

export class FleetMap {
  /** `cfg`: /v1/site's `map` ({tile_url, overlay_url, subdomains, attribution, crs, max_zoom}). */
  constructor(container, cfg, onMode) {
    this.cfg = cfg || {};
    this.onMode = onMode || (() => {});
    this.map = L.map(container, { zoomControl: true, attributionControl: true, maxZoom: this.cfg.max_zoom || 18,
                                  preferCanvas: false });
    this.map.attributionControl.setPrefix(false);
    this.map.createPane("grid").style.zIndex = 150;
    this.map.setView([30.2741, 120.1551], 13);
    this.layers = { fences: L.layerGroup().addTo(this.map), tracks: L.layerGroup().addTo(this.map),
                    trips: L.layerGroup().addTo(this.map), vehicles: L.layerGroup().addTo(this.map) };
    this.markers = {};
    this.tracks = {};
    this.tripLines = {};
    this.positions = {};
    this.grid = null;
    this.tiles = null;
    this.fitted = false;
    if (this.cfg.tile_url) this.useTiles(); else this.useGrid("no tiles configured (api.tile_url)");
    L.control.scale({ imperial: false }).addTo(this.map);
    // plates only where they can be read: zoomed in (at a city's scale they pile up on the yards)
    const labels = () => container.classList.toggle("plates-off", this.map.getZoom() < 14);
    this.map.on("zoomend", labels);
    labels();
  }

  /** The datum to ask the API for: that of the tiles. */
  get crs() { return this.cfg.crs === "gcj02" ? "gcj02" : "wgs84"; }

  useTiles() {
    const c = this.cfg;
    const opts = { subdomains: c.subdomains || "abc", maxZoom: c.max_zoom || 18, attribution: c.attribution || "" };
    let loaded = 0, failed = 0;
    this.tiles = L.tileLayer(c.tile_url, opts);
    this.tiles.on("tileload", () => { loaded++; if (loaded === 1) this.onMode("tiles", `map tiles: ${hostOf(c.tile_url)} (${this.crs.toUpperCase()})`); });
    this.tiles.on("tileerror", () => {
      failed++;
      if (!loaded && failed >= 2) this.useGrid("tiles unavailable (offline?): coordinate grid");
    });
    this.tiles.addTo(this.map);
    if (c.overlay_url) this.overlay = L.tileLayer(c.overlay_url, { ...opts, attribution: "" }).addTo(this.map);
    this.onMode("tiles", `map tiles: ${hostOf(c.tile_url)} (loading)`);
  }

  useGrid(why) {
    for (const t of [this.tiles, this.overlay]) if (t) this.map.removeLayer(t);
    this.tiles = this.overlay = null;
    if (!this.grid) this.grid = new Graticule().addTo(this.map);
    this.onMode("grid", `${why} · ${this.crs === "gcj02" ? "GCJ-02" : "WGS-84"} degrees`);
  }

  setFences(fences) {
    this.layers.fences.clearLayers();
    for (const g of fences) {
      const style = { color: "#7b61c9", weight: 1.5, dashArray: "5 4", fillOpacity: 0.06 };
      const shape = g.circle ? L.circle([g.circle.lat, g.circle.lon], { radius: g.circle.radius_m, ...style })
        : L.polygon(g.polygon, style);
      shape.bindTooltip(`geofence ${g.name}`, { sticky: true });
      shape.addTo(this.layers.fences);
    }
  }

  /** Today's track of a vehicle: [[lat, lon, ms], ...]; trips (start ms, end ms) drawn darker over it. */
  setTrack(vehicle, fixes, trips = []) {
    if (this.tracks[vehicle]) this.layers.tracks.removeLayer(this.tracks[vehicle].line);
    const line = L.polyline(fixes.map((f) => [f[0], f[1]]), { color: "#3a7bd5", weight: 2, opacity: 0.55,
                                                               className: "track" });
    line.addTo(this.layers.tracks);
    this.tracks[vehicle] = { line, fixes };
    for (const [s, e] of trips) {
      const seg = fixes.filter((f) => f[2] >= s && f[2] <= e).map((f) => [f[0], f[1]]);
      if (seg.length > 1) {
        const line = L.polyline(seg, { color: "#17324d", weight: 3, opacity: 0.7, className: "trip" }).addTo(this.layers.trips);
        this.tripLines[`${vehicle}@${s}`] = line;
      }
    }
  }

  /** Show one trip: zoomed to, drawn on top in orange. */
  showTrip(vehicle, startMs) {
    const line = this.tripLines[`${vehicle}@${startMs}`];
    for (const l of Object.values(this.tripLines)) l.setStyle({ color: "#17324d", weight: 3 });
    if (!line) return false;
    line.setStyle({ color: "#e8731a", weight: 5 }).bringToFront();
    this.map.fitBounds(line.getBounds(), { padding: [40, 40], maxZoom: 16 });
    return true;
  }

  extendTrack(vehicle, lat, lon, ms) {
    const t = this.tracks[vehicle];
    if (!t) return this.setTrack(vehicle, [[lat, lon, ms]]);
    t.fixes.push([lat, lon, ms]);
    t.line.addLatLng([lat, lon]);
  }

  setVehicle(p) {
    const color = STATUS_COLORS[p.status] || "#333";
    let m = this.markers[p.vehicle];
    if (!m) {
      m = L.circleMarker([p.lat, p.lon], { radius: 7, weight: 2, color: "#fff", fillOpacity: 1, className: "vehicle" });
      m.bindTooltip(p.plate || p.vehicle, { permanent: true, direction: "right", offset: [8, 0], className: "plate" });
      m.bindPopup(() => popupText(this.positions[p.vehicle]));
      m.addTo(this.layers.vehicles);
      this.markers[p.vehicle] = m;
    }
    this.positions[p.vehicle] = p;
    m.setLatLng([p.lat, p.lon]);
    m.setStyle({ fillColor: color });
    m.getElement && m.getElement() && m.getElement().setAttribute("data-vehicle", p.vehicle);
  }

  /** Forget the vehicles, tracks and trips drawn (another org). */
  clear() {
    for (const k of ["tracks", "trips", "vehicles"]) this.layers[k].clearLayers();
    this.markers = {}; this.tracks = {}; this.tripLines = {}; this.positions = {};
  }

  /** Zoom to what is drawn, once (the dispatcher's pans are kept afterwards). */
  fit(force = false) {
    if (this.fitted && !force) return;
    const pts = [];
    for (const m of Object.values(this.markers)) pts.push(m.getLatLng());
    for (const t of Object.values(this.tracks)) for (const f of t.fixes) pts.push(L.latLng(f[0], f[1]));
    this.layers.fences.eachLayer((l) => { if (l.getBounds) { const b = l.getBounds(); pts.push(b.getNorthEast(), b.getSouthWest()); } });
    if (!pts.length) return;
    this.map.fitBounds(L.latLngBounds(pts), { padding: [24, 24], maxZoom: 16 });
    this.fitted = true;
  }

  invalidate() { this.map.invalidateSize(); }
}

function popupText(p) {
  const t = p.time ? p.time.slice(11, 16) : "—";
  const speed = p.speed_kmh == null ? "—" : Math.round(p.speed_kmh);
  const div = document.createElement("div");
  div.textContent = `${p.plate || ""} ${p.vehicle} · ${p.status} · ${speed} km/h · last fix ${t}`;
  return div;
}

function hostOf(url) { try { return new URL(url.replace(/\{s\}/g, "a")).host; } catch (e) { return url; } }
