"""API benchmark: ``GET /v1/meters/{id}/latest`` and a day's energy indicator for an org, 50 concurrent
clients, against a bare FastAPI endpoint returning a constant, measured in the same run.

Each server runs in its own process under uvicorn (same settings: h11, no access log) on loopback;
the load generator is a minimal asyncio HTTP/1.1 keep-alive client in this process (50
connections, each sending its next request when the previous answer is complete), so that the
client's own cost (httpx would cost more than the server) does not flatten the comparison.

Figures (shared/BENCH.md): ``api.latest_rps`` (ratio to the bare endpoint, goal >= 0.5),
``api.latest_p99_ms`` (goal < 50 ms); also ``api.latest_auth_rps`` (the same with API keys on:
argon2 verified once, then the SHA-256 cache), ``api.energy_day_org_rps`` and
``api.energy_day_org_p99_ms`` (a day's energy indicator of an org read through the query layer
from the embedded store; answers kept while the store has not changed them, ``api.cache``), and
``api.rollup_day_p99_ms`` (the district view's ``/v1/rollup`` for a day, informational).
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import socket
import statistics
import tempfile
import time
from pathlib import Path

from bench.run import figure

CLIENTS = 50
ORG = "330000/330100/330106/inst-042"
DISTRICT = "330000/330100/330106"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _site(n_meters: int):
    from edge.config import Building, Meter, Org, Site, SiteInfo, Transport
    t = Transport(host="127.0.0.1", port=5020)
    orgs = (Org(path="330000", name="浙江省"), Org(path="330000/330100", name="杭州市"),
            Org(path="330000/330100/330106", name="西湖区"), Org(path=ORG, name="机关事务管理中心"))
    return Site(site=SiteInfo(name="bench"), orgs=orgs,
                buildings=(Building(id="hq", org=ORG, floor_area_m2=12000, occupants=420),),
                meters=tuple(Meter(id=f"m-{i:04d}", profile="chint-dtsu666", building="hq", transport=t)
                             for i in range(n_meters)))


def _serve(kind: str, port: int, data_dir: str, ready) -> None:
    """Child process: build the app and serve it until killed."""
    import logging

    import uvicorn
    logging.disable(logging.WARNING)
    if kind == "bare":
        from fastapi import FastAPI
        app = FastAPI()

        @app.get("/v1/meters/{meter_id}/latest")
        async def latest(meter_id: str) -> dict:
            return {"meter": meter_id, "value": 1.0}
    else:
        from api.app import create_app
        from api.context import ApiContext
        from api.keys import KeyStore
        from edge.live import LiveState
        from edge.point import Point
        from edge.query import StoreQuery
        from edge.store import EmbeddedStore
        site = _site(200)
        live = LiveState()
        now = time.time_ns()
        live.update([Point("meter", {"meter": m.id, "org": ORG, "building": "hq", "carrier": "electricity"},
                           {"active_energy_import_kwh": 1234.5, "active_power_total_kw": 42.0, "voltage_l1_v": 230.1,
                            "current_l1_a": 12.0, "frequency_hz": 50.0, "power_factor_total": 0.98}, now)
                     for m in site.meters])
        store = EmbeddedStore(Path(data_dir) / "store.sqlite")
        day = 86400 * 10**9
        start = (now // day - 365) * day - 8 * 3600 * 10**9
        pts = []
        for d in range(366):
            for scope, ident, org in (("org", ORG, ORG), ("org", "330000/330100/330106", "330000/330100/330106"),
                                      ("building", "hq", ORG)):
                pts.append(Point("energy_indicator", {"scope": scope, "id": ident, "org": org, "period": "day",
                                                      "carrier": "electricity"},
                                 {"consumption_kwh": 800.0 + d, "kgce": 98.3, "kgco2": 449.4, "peak_kw": 120.0,
                                  "load_factor": 0.4, "base_load_kw": 20.0, "off_hours_share": 0.3,
                                  "factor_set": "gb2589-2020"}, start + d * day))
        store.write_points(pts)
        keys = None
        if kind == "auth":
            keys = KeyStore(Path(data_dir) / "keys.sqlite")
        ctx = ApiContext(site=site, live=live, query=StoreQuery(store), keys=keys, auth=kind == "auth",
                         rate_per_s=1e9, rate_burst=1e9)
        app = create_app(ctx)
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error", access_log=False,
                            lifespan="off", http="h11", loop="asyncio")
    server = uvicorn.Server(config)
    ready.set()
    server.run()


async def _client(port: int, path: bytes, headers: bytes, stop_at: float, lat: list[float], errors: list[int]) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    req = b"GET " + path + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n" + headers + b"\r\n"
    n = 0
    try:
        while time.perf_counter() < stop_at:
            t0 = time.perf_counter()
            writer.write(req)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            if length:
                await reader.readexactly(length)
            lat.append(time.perf_counter() - t0)
            if status != 200:
                errors.append(status)
            n += 1
    finally:
        writer.close()
    return n


async def _load(port: int, path: str, seconds: float, headers: dict[str, str] | None = None) -> dict:
    hdr = b"".join(f"{k}: {v}\r\n".encode() for k, v in (headers or {}).items())
    # warm-up (caches, argon2 verification of the key, SQLite pages)
    warm: list[float] = []
    await asyncio.gather(*(_client(port, path.encode(), hdr, time.perf_counter() + 0.3, warm, []) for _ in range(4)))
    lat: list[float] = []
    errors: list[int] = []
    t0 = time.perf_counter()
    counts = await asyncio.gather(*(_client(port, path.encode(), hdr, t0 + seconds, lat, errors) for _ in range(CLIENTS)))
    elapsed = time.perf_counter() - t0
    return {"lat": lat, "n": sum(counts), "elapsed": elapsed, "errors": len(errors)}


def _start(kind: str, data_dir: str) -> tuple[mp.Process, int]:
    ctx = mp.get_context("spawn")
    port = _free_port()
    ready = ctx.Event()
    p = ctx.Process(target=_serve, args=(kind, port, data_dir, ready), daemon=True)
    p.start()
    if not ready.wait(60):
        raise RuntimeError(f"{kind} server did not start")
    for _ in range(200):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return p, port
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{kind} server is not listening")


def _stop(p: mp.Process) -> None:
    p.terminate()
    p.join(10)


def _merge(parts: list[dict]) -> dict:
    lat = sorted(x for p in parts for x in p["lat"])
    n = sum(p["n"] for p in parts)
    t = sum(p["elapsed"] for p in parts)
    return {"rps": n / t, "p50_ms": 1000 * statistics.median(lat), "p99_ms": 1000 * lat[int(0.99 * (len(lat) - 1))],
            "errors": sum(p["errors"] for p in parts), "n": n}


def run(quick: bool = False) -> dict:
    """All servers run at once; the loads take turns in rounds, so a busy neighbour on the machine
    weighs on the baseline and on ours alike."""
    seconds = 1.0 if quick else 8.0
    rounds = 1 if quick else 4
    out: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        for d in ("bare", "api", "auth"):
            Path(tmp, d).mkdir()
        from api.keys import KeyStore
        ks = KeyStore(Path(tmp) / "auth" / "keys.sqlite")
        _, token = ks.create(ORG, "viewer")
        ks.close()
        procs = []
        try:
            ports = {}
            for kind in ("bare", "api", "auth"):
                p, ports[kind] = _start(kind, str(Path(tmp, kind)))
                procs.append(p)
            day = time.strftime("%Y-%m-%d", time.gmtime(time.time() + 8 * 3600 - 86400))
            ind_path = (f"/v1/indicators/energy?scope=org&id={ORG.replace('/', '%2F')}&period=day"
                        f"&from={day}T00:00:00&to={day}T23:59:59")
            rollup_path = f"/v1/rollup?org={DISTRICT.replace('/', '%2F')}&period=day&at={day}"
            loads = {"bare": (ports["bare"], "/v1/meters/m-0001/latest", None),
                     "ours": (ports["api"], "/v1/meters/m-0001/latest", None),
                     "auth": (ports["auth"], "/v1/meters/m-0001/latest", {"Authorization": f"Bearer {token}"}),
                     "ind": (ports["api"], ind_path, None),
                     "rollup": (ports["api"], rollup_path, None)}
            parts: dict[str, list[dict]] = {k: [] for k in loads}
            for _ in range(rounds):
                for name, (port, path, headers) in loads.items():
                    parts[name].append(asyncio.run(_load(port, path, seconds / rounds, headers)))
        finally:
            for p in procs:
                _stop(p)
    base, ours, auth, ind, roll = (_merge(parts[k]) for k in ("bare", "ours", "auth", "ind", "rollup"))
    bw = "bare FastAPI endpoint returning a constant, same uvicorn settings, same run"
    out["api.latest_rps"] = figure(round(ours["rps"]), "requests/s", baseline=round(base["rps"]), baseline_what=bw,
                                   goal=">= 0.5 x baseline", met=ours["rps"] >= 0.5 * base["rps"] and not ours["errors"],
                                   p50_ms=round(ours["p50_ms"], 2), clients=CLIENTS, errors=ours["errors"])
    out["api.latest_p99_ms"] = figure(round(ours["p99_ms"], 2), "ms", baseline=round(base["p99_ms"], 2),
                                      baseline_what=bw + " (its p99)", goal="< 50 ms", higher_is_better=False,
                                      met=ours["p99_ms"] < 50)
    out["api.latest_auth_rps"] = figure(round(auth["rps"]), "requests/s", baseline=round(base["rps"]), baseline_what=bw,
                                        goal=">= 0.5 x baseline (API keys on)", met=auth["rps"] >= 0.5 * base["rps"] and not auth["errors"],
                                        p50_ms=round(auth["p50_ms"], 2), p99_ms=round(auth["p99_ms"], 2), errors=auth["errors"])
    out["api.energy_day_org_rps"] = figure(round(ind["rps"]), "requests/s", baseline=round(base["rps"]), baseline_what=bw,
                                           goal="informational (store query per request)", met=None if ind["errors"] == 0 else False,
                                           p50_ms=round(ind["p50_ms"], 2), errors=ind["errors"])
    out["api.energy_day_org_p99_ms"] = figure(round(ind["p99_ms"], 2), "ms", baseline=round(base["p99_ms"], 2),
                                              baseline_what=bw + " (its p99)", goal="< 50 ms", higher_is_better=False,
                                              met=ind["p99_ms"] < 50, rps=round(ind["rps"]))
    out["api.rollup_day_p99_ms"] = figure(round(roll["p99_ms"], 2), "ms", baseline=round(base["p99_ms"], 2),
                                          baseline_what=bw + " (its p99)", goal="informational (the district view)",
                                          higher_is_better=False, met=None if roll["errors"] == 0 else False,
                                          rps=round(roll["rps"]), errors=roll["errors"])
    return out


if __name__ == "__main__":
    import json
    print(json.dumps(run(quick=True), indent=2))
