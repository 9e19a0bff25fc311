"""Conversion factors (to kgce, 千克标准煤) and emission factors (to kgCO₂), each with its source
and how sure we are, plus the public-institution quotas and five-year targets.

Values and sources are those of ``shared/DOMAIN.md``; every one is a default a site may
override. ``Confidence.unconfirmed`` values must be shown as such wherever they are reported
(the indicator Points carry the factor set's name; ``FactorSet.unconfirmed()`` lists them).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import Enum


class Confidence(str, Enum):
    confirmed = "confirmed"
    secondary = "secondary sources"
    unconfirmed = "unconfirmed"


@dataclass(frozen=True, slots=True)
class Factor:
    value: float
    unit: str
    source: str
    confidence: Confidence


# --- conversion to standard coal (当量值, equivalent value) --------------------------------------

ELECTRICITY_KGCE_PER_KWH = Factor(0.1229, "kgce/kWh", "GB/T 2589-2020 (equivalent value, 当量值)",
                                  Confidence.secondary)
DIESEL_KGCE_PER_KG = Factor(1.4571, "kgce/kg", "GB/T 2589-2020", Confidence.secondary)
GASOLINE_KGCE_PER_KG = Factor(1.4714, "kgce/kg", "GB/T 2589-2020", Confidence.secondary)
HEAT_KGCE_PER_MJ = Factor(0.03412, "kgce/MJ", "GB/T 2589-2020", Confidence.secondary)
NATURAL_GAS_KGCE_PER_M3 = Factor(1.2143, "kgce/m3",
                                 "GB/T 2589 gives 1.1000-1.3300 kgce/m3; 1.2143 is a common mid value",
                                 Confidence.unconfirmed)
MJ_PER_KWH = 3.6

# --- emission factors --------------------------------------------------------------------------

GRID_KGCO2_PER_KWH = {
    "national-2022": Factor(0.5366, "kgCO2/kWh", "Ministry of Ecology and Environment, 2024 release",
                            Confidence.confirmed),
    "east-china-2022": Factor(0.5617, "kgCO2/kWh", "Ministry of Ecology and Environment, 2024 release",
                              Confidence.confirmed),
    "national-2021": Factor(0.5568, "kgCO2/kWh", "Ministry of Ecology and Environment, 2023 release",
                            Confidence.confirmed),
}
# Not in DOMAIN.md: derived here, labelled unconfirmed until a site or a better source sets them.
NATURAL_GAS_KGCO2_PER_M3 = Factor(2.184, "kgCO2/m3",
                                  "derived: IPCC 2006 default 56,100 kgCO2/TJ x NCV 38.931 MJ/m3 (GB/T 2589)",
                                  Confidence.unconfirmed)
HEAT_KGCO2_PER_MJ = Factor(0.11, "kgCO2/MJ",
                           "purchased heat default 0.11 tCO2/GJ of the national GHG accounting guidelines "
                           "for enterprises (secondary citation)", Confidence.unconfirmed)


@dataclass(frozen=True)
class FactorSet:
    """The factors one computation used. ``name`` goes into the indicator Points."""

    name: str = "default"
    grid_region: str = "east-china-2022"
    electricity_kgce_per_kwh: Factor = ELECTRICITY_KGCE_PER_KWH
    gas_kgce_per_m3: Factor = NATURAL_GAS_KGCE_PER_M3
    heat_kgce_per_mj: Factor = HEAT_KGCE_PER_MJ
    grid_kgco2_per_kwh: Factor = GRID_KGCO2_PER_KWH["east-china-2022"]
    gas_kgco2_per_m3: Factor = NATURAL_GAS_KGCO2_PER_M3
    heat_kgco2_per_mj: Factor = HEAT_KGCO2_PER_MJ

    def with_grid_factor(self, kgco2_per_kwh: float, source: str = "site config") -> "FactorSet":
        """The site's configured grid factor (``analytics.grid_kgco2_per_kwh``)."""
        for region, f in GRID_KGCO2_PER_KWH.items():
            if abs(f.value - kgco2_per_kwh) < 1e-9:
                return replace(self, grid_region=region, grid_kgco2_per_kwh=f)
        return replace(self, name=f"{self.name}+grid{kgco2_per_kwh}", grid_region="custom",
                       grid_kgco2_per_kwh=Factor(kgco2_per_kwh, "kgCO2/kWh", source, Confidence.unconfirmed))

    def kgce_per_unit(self, carrier: str) -> float:
        """kgce per native unit of a meter's carrier (kWh electricity/heat, m3 gas); water 0."""
        if carrier == "electricity":
            return self.electricity_kgce_per_kwh.value
        if carrier == "gas":
            return self.gas_kgce_per_m3.value
        if carrier == "heat":
            return self.heat_kgce_per_mj.value * MJ_PER_KWH
        if carrier == "water":
            return 0.0
        raise ValueError(f"unknown carrier {carrier!r}")

    def kgco2_per_unit(self, carrier: str) -> float:
        if carrier == "electricity":
            return self.grid_kgco2_per_kwh.value
        if carrier == "gas":
            return self.gas_kgco2_per_m3.value
        if carrier == "heat":
            return self.heat_kgco2_per_mj.value * MJ_PER_KWH
        if carrier == "water":
            return 0.0
        raise ValueError(f"unknown carrier {carrier!r}")

    def unconfirmed(self) -> list[str]:
        """Names of the factors in this set that are not confirmed by a primary source."""
        return [k for k, v in self.__dict__.items()
                if isinstance(v, Factor) and v.confidence is Confidence.unconfirmed]


# native unit of each carrier's counter (the shared schema's field names)
CARRIER_FIELD = {
    "electricity": ("active_energy_import_kwh", "kWh"),
    "water": ("water_volume_m3", "m3"),
    "gas": ("gas_volume_m3", "m3"),
    "heat": ("heat_energy_kwh", "kWh"),
}
# the instantaneous rate of each carrier (its range bounds how fast the counter may move)
RATE_FIELD = {
    "electricity": "active_power_total_kw",
    "water": "flow_m3_h",
    "gas": "gas_flow_m3_h",
    "heat": "heat_power_kw",
}


# --- quotas and targets ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Target:
    name: str
    baseline: float          # 2020 national public-institution value
    reduction: float         # fraction to cut by the target year
    unit: str
    target_year: int
    source: str
    confidence: Confidence

    @property
    def target(self) -> float:
        # the plan publishes decimals (329.56 x 94 % = 309.7864); binary round-off (309.78639999999996)
        # would call a value of exactly the target "not met", so round back to the decimal
        return round(self.baseline * (1.0 - self.reduction), 9)


FIVE_YEAR_TARGETS = {
    "kgce_per_m2": Target("energy per floor area", 18.48, 0.05, "kgce/m2", 2025,
                          "14th Five-Year plan for public-institution energy saving, 2020 baseline",
                          Confidence.secondary),
    "kgce_per_person": Target("energy per person", 329.56, 0.06, "kgce/person", 2025,
                              "same; Zhejiang also -6 %", Confidence.secondary),
    "water_m3_per_person": Target("water per person", 21.53, 0.06, "m3/person", 2025,
                                  "same", Confidence.secondary),
}


@dataclass(frozen=True, slots=True)
class Quota:
    name: str
    constraint: float
    guide: float
    unit: str
    source: str
    confidence: Confidence


# GB/T 51161-2016 office constraint values, hot-summer/cold-winter zone, 党政机关 offices
OFFICE_QUOTAS = {
    "A": Quota("office A-class", 70.0, 55.0, "kWh/(m2.a)", "GB/T 51161-2016 (our notes)", Confidence.unconfirmed),
    "B": Quota("office B-class", 90.0, 65.0, "kWh/(m2.a)", "GB/T 51161-2016 (our notes)", Confidence.unconfirmed),
}


@dataclass(frozen=True, slots=True)
class Progress:
    """Where a yearly value stands against a target or quota.

    ``ratio`` = value / limit (≤ 1 means within); ``reduction_vs_baseline`` = 1 − value/baseline
    (positive = saved, only for five-year targets).
    """

    name: str
    value: float
    limit: float
    ratio: float
    met: bool
    unit: str
    confidence: Confidence
    reduction_vs_baseline: float | None = None


def target_progress(key: str, value: float, targets: dict[str, Target] = FIVE_YEAR_TARGETS) -> Progress:
    t = targets[key]
    return Progress(t.name, value, t.target, value / t.target, value <= t.target, t.unit, t.confidence,
                    1.0 - value / t.baseline)


def quota_progress(building_class: str, kwh_per_m2_year: float, quotas: dict[str, Quota] = OFFICE_QUOTAS
                   ) -> Progress:
    q = quotas[building_class]
    return Progress(q.name, kwh_per_m2_year, q.constraint, kwh_per_m2_year / q.constraint,
                    kwh_per_m2_year <= q.constraint, q.unit, q.confidence)
