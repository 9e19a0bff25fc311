"""`edge run` on a site that says `mqtt.broker: embedded` (the default) starts the in-process broker
on `mqtt.embedded_port`: a vehicle publishing there with paho (a client nobody here wrote) is
stored and served. Regression: `edge run` used to log "mqtt down ... Connection refused" forever,
because only `edge demo` started a broker."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import paho.mqtt.client as paho
import pytest

pytestmark = pytest.mark.slow

ORG = "330000/330100/330106/inst-042"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def site_yaml(tmp: Path, broker_port: int, api_port: int) -> Path:
    p = tmp / "site.yaml"
    p.write_text(f"""
site: {{name: run-embedded}}
orgs:
  - {{path: "330000", name: 浙江省}}
  - {{path: "330000/330100", name: 杭州市}}
  - {{path: "330000/330100/330106", name: 西湖区}}
  - {{path: "{ORG}", name: 西湖区机关事务管理中心}}
vehicles:
  - {{id: veh-01, plate: 浙A·12345, org: "{ORG}"}}
mqtt:
  broker: embedded
  embedded_port: {broker_port}
  client_id: edge-run-test
store: {{kind: embedded, path: "{tmp / 'store.sqlite'}"}}
outbox: {{path: "{tmp / 'outbox.sqlite'}"}}
api: {{port: {api_port}}}
""", encoding="utf-8")
    return p


def wait_for(pred, timeout_s: float, what: str, proc: subprocess.Popen):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"edge run exited early while waiting for {what}"
        try:
            v = pred()
        except (httpx.HTTPError, OSError):
            v = None
        if v:
            return v
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_edge_run_with_embedded_broker_stores_a_position_published_with_paho(tmp_path: Path):
    broker_port, api_port = free_port(), free_port()
    site = site_yaml(tmp_path, broker_port, api_port)
    edge = Path(sys.executable).with_name("edge")
    cmd = [str(edge)] if edge.exists() else [sys.executable, "-m", "edge.app.cli"]
    log = (tmp_path / "edge.log").open("w+")
    proc = subprocess.Popen(cmd + ["run", "-c", str(site), "--for", "90"], stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    api = f"http://127.0.0.1:{api_port}"
    try:
        health = wait_for(lambda: httpx.get(f"{api}/v1/health", timeout=2).json(), 30, "the API", proc)
        broker = health["components"]["broker"]
        assert broker["kind"] == "embedded" and broker["port"] == broker_port and broker["running"], broker
        wait_for(lambda: httpx.get(f"{api}/v1/health", timeout=2).json()["components"]["gps"]["connected"],
                 30, "the GPS subscriber to connect to the embedded broker", proc)

        client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="veh-01-terminal")
        client.connect("127.0.0.1", broker_port)
        client.loop_start()
        try:
            msg = client.publish("vehicles/veh-01/position",
                                 json.dumps({"time": time.time(), "lat": 30.2741, "lon": 120.1551, "speed": 12.5}),
                                 qos=1)
            msg.wait_for_publish(10)
            assert msg.is_published()
        finally:
            client.loop_stop()
            client.disconnect()

        latest = wait_for(lambda: (r := httpx.get(f"{api}/v1/vehicles/veh-01/latest", timeout=2)).status_code == 200
                          and r.json(), 20, "the position at /v1/vehicles/veh-01/latest", proc)
        assert latest["lat"] == pytest.approx(30.2741, abs=1e-6) and latest["lon"] == pytest.approx(120.1551, abs=1e-6)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        log.seek(0)
        out = log.read()
        log.close()
    assert proc.returncode == 0, out[-3000:]
    assert "Connection refused" not in out, out[-3000:]
