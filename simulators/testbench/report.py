"""What a run leaves behind for people: a reconciliation table (Markdown), a PNG of throughput and
edge memory over time with the chaos events marked, and the soak's memory growth."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence


def throughput_series(samples: Sequence[dict[str, Any]]) -> tuple[list[float], list[float]]:
    """Points committed to the outbox per second between consecutive samples (all edges)."""
    ts, rates = [], []
    for a, b in zip(samples, samples[1:], strict=False):
        dt = b["t_s"] - a["t_s"]
        if dt > 0:
            ts.append(b["t_s"])
            rates.append(max(0.0, (b["committed"] - a["committed"]) / dt))
    return ts, rates


def memory_growth_pct(samples: Sequence[dict[str, Any]], warmup_s: float) -> float | None:
    """RSS growth after warm-up: mean of the last tenth of the run against the minute after warm-up."""
    after = [s for s in samples if s["t_s"] >= warmup_s and s["rss_mb"] > 0]
    if len(after) < 4:
        return None
    span = after[-1]["t_s"] - after[0]["t_s"]
    first = [s["rss_mb"] for s in after if s["t_s"] <= after[0]["t_s"] + max(60.0, span * 0.1)]
    last = [s["rss_mb"] for s in after if s["t_s"] >= after[-1]["t_s"] - max(60.0, span * 0.1)]
    base = sum(first) / len(first)
    return (sum(last) / len(last) - base) / base * 100.0


def plot(report: dict[str, Any], path: Path, title: str | None = None) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = report["samples"]
    ts, rates = throughput_series(samples)
    fig, (ax1, ax2, ax3) = plt.subplots(3, 1, figsize=(10, 8), sharex=True)
    ax1.plot(ts, rates, lw=1, color="tab:blue")
    ax1.set_ylabel("points/s into outbox")
    ax2.plot([s["t_s"] for s in samples], [s["rss_mb"] for s in samples], lw=1, color="tab:red")
    ax2.set_ylabel("edge RSS (MB)")
    ax3.plot([s["t_s"] for s in samples], [s["depth"] for s in samples], lw=1, color="tab:green")
    ax3.set_ylabel("outbox depth (points)")
    ax3.set_xlabel("seconds since start")
    for ev in report.get("events", []):
        if ev["event"] in ("start",):
            continue
        for ax in (ax1, ax2, ax3):
            ax.axvline(ev["t_s"], color="grey", lw=0.6, ls="--")
        ax1.annotate(ev["event"], (ev["t_s"], 1), xycoords=("data", "axes fraction"), rotation=90, fontsize=7,
                     va="top", ha="right", color="dimgrey")
    acc = report.get("accounting", {})
    fig.suptitle(title or f"{report['scenario']}: {report['meters']} meters, {report['vehicles']} vehicles, "
                 f"chaos {'on' if report.get('chaos') else 'off'} - {acc.get('verdict', '')}", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def markdown(report: dict[str, Any]) -> str:
    acc = report["accounting"]
    rows = ["| source | sent | stored | lost | explained | unexplained | duplicated | late | unexpected |",
            "|---|---|---|---|---|---|---|---|---|"]
    for key in ("meters", "positions"):
        a = acc[key]
        expl = ", ".join(f"{k} {v}" for k, v in a["explained"].items() if v) or "-"
        rows.append(f"| {key} | {a['sent']} | {a['stored']} | {a['lost']} | {expl} | {a['unexplained']} | "
                    f"{a['duplicated']} | {a['late']} | {a['unexpected']} |")
    lines = [f"## {report['scenario']} ({report['meters']} meters, {report['vehicles']} vehicles, "
             f"{report['duration_s']:.0f} s, chaos {'on' if report['chaos'] else 'off'}, store {report['store']})", "",
             *rows, "",
             _outbox_full(report) + f"**{acc['verdict']}** (drained in {report['drain_s']} s).", "",
             "Events: " + "; ".join(f"{e['t_s']:.0f} s {e['event']}" for e in report["events"]), ""]
    return "\n".join(lines)


def _outbox_full(report: dict[str, Any]) -> str:
    full = report.get("outbox_full")
    if not full:
        return ""
    energy = report.get("energy") or {}
    return (f"Outbox full (quota): {full['held_back']} positions held back (not acknowledged, delivered later), "
            f"{full['thinned']} meter readings thinned, {full['dropped']} dropped; positions dropped: "
            f"{full['recorded']['positions']}; meter-day energies changed by thinning: {energy.get('changed', 0)} "
            f"of {energy.get('meter_counters_thinned', 0)} thinned counters over {energy.get('days', 0)} day(s). ")
