"""Compile a site at start-up: the checked config plus the ready-made plans each collector runs.

A site that compiles is a site that runs: unknown profiles, unknown register names and the like
fail here, naming the file, the object and the field, never later in a hot loop.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from analytics.energy.factors import CARRIER_FIELD, RATE_FIELD
from analytics.energy.items import check_items
from collector.modbus.bus import BusBudget, bus_budgets
from collector.modbus.profiles import counter_defaults, find_profile, load_profiles
from collector.modbus.service import compile_site as compile_modbus
from edge.config import Site, load_site
from edge.errors import ConfigError


@dataclass(frozen=True)
class PlanSummary:
    register_count: int
    request_count: int


@dataclass(frozen=True)
class CompiledSite:
    site: Site
    file: str = "<site>"
    modbus: Any = None  # collector.modbus plans, handed to the Modbus collector
    modbus_plans: dict[str, PlanSummary] = field(default_factory=dict)
    buses: list[BusBudget] = field(default_factory=list)  # one per serial line, with its verdict


def compile_site(source: Site | str | os.PathLike, file: str | None = None) -> CompiledSite:
    if isinstance(source, Site):
        site, name = source, file or "<site>"
    else:
        site, name = load_site(source), str(source)
    problems = check_items(site.meters)
    if problems:
        msgs = [str(ConfigError(p.message, file=name, obj=f"meter {p.meter}", field=f"meters.{p.field}"))
                for p in problems]
        e = ConfigError("")
        e.args = ("\n".join(msgs),)
        e.file, e.obj, e.field = name, f"meter {problems[0].meter}", f"meters.{problems[0].field}"
        raise e
    summaries: dict[str, PlanSummary] = {}
    plans = None
    if site.meters:
        try:
            plans = compile_modbus(site, site.profiles_dir)
        except ConfigError as e:
            if e.file is None:
                e.args = (f"{name}: {e.args[0]}",)
                e.file = name
            raise
        for plan in plans:
            summaries[plan.meter.id] = PlanSummary(len(plan.registers), len(plan.requests))
    buses = bus_budgets(plans or ())
    refused = [b for b in buses if b.verdict == "refuse"]
    if refused:
        msgs = [str(ConfigError(b.reason, file=name, obj=f"bus {b.key} (meters {', '.join(b.meters)})",
                                field="meters.interval_s")) for b in refused]
        e = ConfigError("")
        e.args = ("\n".join(msgs),)
        e.file, e.obj, e.field = name, f"bus {refused[0].key}", "meters.interval_s"
        raise e
    return CompiledSite(site=site, file=name, modbus=plans, modbus_plans=summaries, buses=buses)


def counter_defaults_for(site: Site) -> dict[str, dict[str, float]]:
    """Per physical meter: what its device profile implies for its counter (rollover, rated rate,
    backstep tolerance: ``collector.modbus.profiles.counter_defaults``), for the energy passes. A
    meter whose profile cannot be found gets none (``compile_site`` refuses such a site anyway)."""
    try:
        profiles = load_profiles(site.profiles_dir)
    except ConfigError:
        return {}
    out: dict[str, dict[str, float]] = {}
    for m in site.meters:
        if m.virtual:
            continue
        try:
            prof = find_profile(profiles, m.profile)
        except KeyError:
            continue
        c = m.carrier.value
        out[m.id] = counter_defaults(prof, CARRIER_FIELD[c][0], RATE_FIELD[c], m.pt_ratio, m.ct_ratio)
    return out
