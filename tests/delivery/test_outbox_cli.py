"""``edge outbox`` verbs on a real outbox file (typer's CliRunner; the lead mounts the sub-app)."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from edge.outbox import Outbox
from edge.outbox_cli import app
from tests.delivery.conftest import meter_point

runner = CliRunner()


def _outbox_with_dead_letters(path: Path) -> None:
    ob = Outbox(path)
    try:
        ob.put_sync([meter_point(1, s) for s in range(5)])
        b = ob.batch(2)  # the first row holds all five: ack them, refusing one
        ob.ack(b.last_id, [(b.lines[2], 'partial write: field type conflict: input field "x"')])
        ob.put_sync([meter_point(2, 0)])
        ob.dead_letter_payload("gps", b"{not json", "bad json", topic="vehicles/v9/position")
    finally:
        ob.close()


def test_status_shows_depth_and_dead_letters(tmp_path: Path):
    path = tmp_path / "o.sqlite"
    _outbox_with_dead_letters(path)
    r = runner.invoke(app, ["status", "--outbox", str(path), "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    assert doc["depth_points"] == 1 and doc["dead_letters"] == {"point": 1, "payload": 1}
    assert doc["counters"]["committed"] == 6 and doc["counters"]["dead_lettered_points"] == 1
    r = runner.invoke(app, ["status", "--outbox", str(path)])
    assert r.exit_code == 0 and "points in the log" in r.output


def test_dead_letters_list_shows_the_reason(tmp_path: Path):
    path = tmp_path / "o.sqlite"
    _outbox_with_dead_letters(path)
    r = runner.invoke(app, ["dead-letters", "--outbox", str(path), "--json", "--kind", "point"])
    assert r.exit_code == 0, r.output
    (row,) = json.loads(r.output)
    assert row["reason"].startswith("partial write: field type conflict") and row["payload"] == meter_point(1, 2).to_line()


def test_replay_puts_refused_points_back_and_purge_deletes(tmp_path: Path):
    path = tmp_path / "o.sqlite"
    _outbox_with_dead_letters(path)
    r = runner.invoke(app, ["replay", "--outbox", str(path), "--all"])
    assert r.exit_code == 0 and "replayed 1 point" in r.output
    assert runner.invoke(app, ["purge", "--outbox", str(path), "--dead-letters"]).exit_code == 2  # needs --yes
    r = runner.invoke(app, ["purge", "--outbox", str(path), "--dead-letters", "--yes"])
    assert r.exit_code == 0 and "deleted 1 dead letter" in r.output
    ob = Outbox(path)
    try:
        assert ob.depth() == 2 and ob.dead_letters(10) == []
    finally:
        ob.close()
    r = runner.invoke(app, ["purge", "--outbox", str(path), "--pending", "--yes"])
    assert r.exit_code == 0 and "deleted 2 waiting point" in r.output


def test_site_file_gives_the_outbox_path_and_missing_files_fail_clearly(tmp_path: Path):
    path = tmp_path / "o.sqlite"
    _outbox_with_dead_letters(path)
    site = tmp_path / "site.yaml"
    site.write_text(f"outbox:\n  path: {path}\n")
    r = runner.invoke(app, ["status", "-c", str(site), "--json"])
    assert r.exit_code == 0 and json.loads(r.output)["depth_points"] == 1
    r = runner.invoke(app, ["status", "--outbox", str(tmp_path / "none.sqlite")])
    assert r.exit_code == 2 and "no outbox at" in r.output


def test_status_shows_each_consumers_lag_and_dropped_lists_what_the_full_log_thinned(tmp_path: Path):
    from edge.outbox import OnFull
    from edge.point import Point

    path = tmp_path / "o.sqlite"
    ob = Outbox(path, max_bytes=12 * len(meter_point(1, 0).to_line()))
    try:
        ob.register_consumer("upstream", ["energy_indicator"])
        ob.put_sync([Point("energy_indicator", {"id": "x"}, {"consumption_kwh": 1.0}, 1)])
        for s in range(40):
            ob.put_sync([meter_point(1, s)], on_full=OnFull.thin)
    finally:
        ob.close()
    r = runner.invoke(app, ["status", "--outbox", str(path), "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    lags = {c["name"]: c["lag_points"] for c in doc["consumers"]}
    assert lags["upstream"] == 1 and lags["local"] == doc["depth_points"]
    assert doc["counters"]["thinned"] > 0
    r = runner.invoke(app, ["status", "--outbox", str(path)])
    assert r.exit_code == 0 and "consumers" in r.output and "upstream" in r.output
    r = runner.invoke(app, ["dropped", "--outbox", str(path), "--json", "--limit", "3"])
    assert r.exit_code == 0, r.output
    rows = json.loads(r.output)
    assert len(rows) == 3 and all(x["reason"] in ("thinned", "dropped") and x["missed"] == ["local"] for x in rows)
    assert rows[0]["id"] < rows[-1]["id"]  # the newest three, oldest first
