"""Write the outbox files of earlier versions that tests/delivery/test_consumers.py migrates.

They are made by the earlier code itself, read from git history, so the tests open what the field
has, not what we think it has:

* ``outbox-v1.sqlite``: ``edge/outbox.py`` of 8ca27cf (one line per row, column ``line``);
* ``outbox-v2.sqlite``: ``edge/outbox.py`` of 8bbf11c (rows of lines, one reader: a row is deleted
  once the sink has it), with a dead letter and its counters;
* ``upstream_outbox.sqlite``: ``api/upstream.py`` and ``edge/outbox.py`` of 8bbf11c (the upstream's
  second outbox, with indicators the province had not confirmed and a point it refused).

Run from the repository root: ``python tests/delivery/data/make_old_outboxes.py``. Each file is
checkpointed and closed (no -wal beside it).
"""

from __future__ import annotations

import asyncio
import importlib.util
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
sys.path.insert(0, str(ROOT))

from edge.point import Point  # noqa: E402

V1, V2 = "8ca27cf", "8bbf11c"
ORG = "330000/330100/330106/inst-042"
T0 = 1_700_000_000_000_000_000


def old_module(commit: str, path: str, name: str):
    src = subprocess.run(["git", "show", f"{commit}:{path}"], cwd=ROOT, check=True, capture_output=True, text=True).stdout
    f = Path(tempfile.mkdtemp()) / f"{name}.py"
    f.write_text(src)
    spec = importlib.util.spec_from_file_location(name, f)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def reading(meter: int, seq: int) -> Point:
    return Point("meter", {"meter": f"m-{meter:04d}", "org": ORG, "carrier": "electricity"},
                 {"active_energy_import_kwh": 1000.0 + seq * 0.25}, T0 + seq * 15_000_000_000)


def indicator(day: int) -> Point:
    return Point("energy_indicator", {"scope": "org", "id": ORG, "org": ORG, "period": "day", "carrier": "electricity"},
                 {"consumption_kwh": 100.0 + day}, T0 + day * 86_400_000_000_000)


def v1() -> None:
    path = HERE / "outbox-v1.sqlite"
    path.unlink(missing_ok=True)
    ob = old_module(V1, "edge/outbox.py", "outbox_v1").Outbox(path)
    ob.put_sync([reading(1, s) for s in range(10)])
    b = ob.batch(4)
    ob.ack(b.last_id)  # delivered: 6 waiting
    ob.close()


async def v2() -> None:
    mod = old_module(V2, "edge/outbox.py", "outbox_v2")
    path = HERE / "outbox-v2.sqlite"
    path.unlink(missing_ok=True)
    ob = mod.Outbox(path)
    await ob.put([reading(m, s) for s in range(5) for m in range(3)])
    b = ob.batch(1000)
    ob.ack(b.last_id, [(b.lines[0], "partial write: field type conflict")])  # delivered, one refused
    await ob.put([reading(m, s) for s in range(5, 10) for m in range(3)])  # 15 waiting
    ob.close()
    # the upstream's second outbox of that version: 3 indicators waiting, one refused earlier
    sys.modules["edge.outbox"] = mod  # that version's api/upstream.py and edge/delivery.py, on its outbox
    sys.modules["edge.delivery"] = old_module(V2, "edge/delivery.py", "delivery_v2")
    up_mod = old_module(V2, "api/upstream.py", "upstream_v2")
    path = HERE / "upstream_outbox.sqlite"
    path.unlink(missing_ok=True)
    up = up_mod.Upstream(path, _NoSink())
    for d in range(4):
        await up.offer([indicator(d), reading(1, d)])  # raw readings are not forwarded
    b = up.outbox.batch(1)
    up.outbox.ack(b.last_id, [(b.lines[0], "400 unknown measurement")])
    await up.close()


class _NoSink:
    name = "none"

    async def write(self, lines) -> None:
        raise AssertionError("not delivered")

    async def aclose(self) -> None:
        return None


if __name__ == "__main__":
    v1()
    asyncio.run(v2())
    for p in sorted(HERE.glob("*.sqlite*")):
        print(p.name, p.stat().st_size)
