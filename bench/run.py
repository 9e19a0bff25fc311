"""``make bench``: run every capability's benchmark and write bench/results.json and bench/results.md.

Each figure is measured beside its baseline in the same run, on this machine; nothing fails on a
slow machine. A module that cannot run records its figures with ``"value": null`` and a ``why``.

    python -m bench.run                 # everything
    python -m bench.run --only delivery # one module
    python -m bench.run --quick         # smoke sizes (seconds), for checking the harness
"""

from __future__ import annotations

import argparse
import datetime as dt
import fcntl
import importlib
import json
import os
import platform
import sys
import time
import traceback
from pathlib import Path

MODULES = ("delivery", "modbus", "mqtt", "jt808", "energy", "fleet", "api", "demo", "scenario")
HERE = Path(__file__).resolve().parent


def _machine() -> dict:
    return {"cpus": os.cpu_count(), "python": platform.python_version(),
            "when": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "platform": platform.platform()}


def run(only: list[str] | None, quick: bool, out: Path) -> dict:
    machine = _machine()
    new: dict[str, dict] = {}
    for name in only or MODULES:
        try:
            mod = importlib.import_module(f"bench.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"bench.{name}":
                print(f"bench: {name}: no benchmark module yet", file=sys.stderr)
                continue
            raise
        t0 = time.monotonic()
        print(f"bench: {name} ...", file=sys.stderr, flush=True)
        try:
            figs = mod.run(quick=quick)
        except Exception as e:  # one broken benchmark never hides the others
            traceback.print_exc()
            figs = {f"{name}.error": {"value": None, "why": f"{type(e).__name__}: {e}"}}
        for k, v in figs.items():
            v.setdefault("measured_at", machine["when"])
            new[k] = v
        print(f"bench: {name} done in {time.monotonic() - t0:.0f} s", file=sys.stderr, flush=True)
    return write(new, machine, out)


def write(new: dict[str, dict], machine: dict, out: Path) -> dict:
    """Merge this run's figures into ``out`` under a lock: figures of areas not run are kept."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        results = json.loads(out.read_text()) if out.exists() else {}
        results["machine"] = machine
        results.setdefault("figures", {}).update(new)
        results["figures"] = dict(sorted(results["figures"].items()))
        tmp = out.with_suffix(".tmp")
        tmp.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
        tmp.replace(out)
        out.with_suffix(".md").write_text(markdown(results))
    return results


def markdown(results: dict) -> str:
    m = results["machine"]
    lines = ["# Benchmark results\n", f"{m['cpus']} CPUs, Python {m['python']}, {m['when']}\n",
             "| figure | value | unit | baseline | baseline is | ratio | goal | met |", "|---|---|---|---|---|---|---|---|"]
    for k, v in sorted(results["figures"].items()):
        val = v.get("value")
        lines.append(f"| `{k}` | {_fmt(val) if val is not None else 'n/a: ' + v.get('why', '')} | {v.get('unit', '')} | "
                     f"{_fmt(v.get('baseline'))} | {v.get('baseline_what', '')} | {_fmt(v.get('ratio'))} | "
                     f"{v.get('goal', '')} | {'yes' if v.get('met') else ('no' if v.get('met') is False else '')} |")
    return "\n".join(lines) + "\n"


def _fmt(x) -> str:
    if x is None:
        return ""
    if isinstance(x, float):
        return f"{x:,.3g}" if abs(x) < 100 else f"{x:,.0f}"
    return f"{x:,}" if isinstance(x, int) else str(x)


def figure(value, unit: str, *, baseline=None, baseline_what: str = "", goal: str = "", higher_is_better: bool = True,
           met: bool | None = None, **extra) -> dict:
    """One figure in BENCH.md's format; ``ratio`` is value/baseline (baseline/value for times)."""
    ratio = None
    if value is not None and baseline not in (None, 0) and value != 0:
        ratio = round(value / baseline if higher_is_better else baseline / value, 3)
    return {"value": value, "unit": unit, "baseline": baseline, "baseline_what": baseline_what or None,
            "ratio": ratio, "goal": goal, "met": met, **extra}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", action="append", choices=MODULES)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", type=Path, default=HERE / "results.json")
    a = ap.parse_args()
    res = run(a.only, a.quick, a.out)
    print(markdown(res))


if __name__ == "__main__":
    main()
