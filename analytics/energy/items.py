"""Itemised energy (分类分项): the classification codes of the monitoring guideline for government
office and large public buildings (国家机关办公建筑和大型公共建筑能耗监测系统 分项能耗数据采集技术导则,
MOHURD 2008), with how sure we are of each code.

A code has five characters: two for the carrier (01 electricity, 02 water, 03 gas, 04 district
heat, 05 district cooling), then one per level of the electricity items: ``01B00`` HVAC (空调用电),
``01B10`` its sub-item the cooling/heating plant (冷热站). ``stem(code)`` drops the trailing zeros,
so an item lies within another when its stem starts with the other's (``01B10`` within ``01B00``
within ``01000``).

Where a code comes from and its confidence: docs/energy.md ("Items"). The guideline itself is not
at hand; the codes were read from public implementations of its upload format. A site must not
claim compliance on a code marked ``one source``.

Two buckets of our own complete a breakdown (they are not guideline codes): ``unmetered``
(unmetered and losses: what a parent meter measured beyond its sub-meters) and ``unassigned``
(metered, but by a meter that has no item).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Iterable


class Confidence(str, Enum):
    several = "several independent sources"
    two = "two independent sources"
    one = "one source"
    ours = "ours (not a guideline code)"


@dataclass(frozen=True, slots=True)
class Item:
    code: str
    name: str          # English
    name_zh: str
    carrier: str       # our carrier (electricity, water, gas, heat)
    confidence: Confidence

    @property
    def level(self) -> int:
        return level(self.code)


UNMETERED = "unmetered"
UNASSIGNED = "unassigned"

_CARRIER_OF_PREFIX = {"01": "electricity", "02": "water", "03": "gas", "04": "heat", "05": "heat"}

ITEMS: dict[str, Item] = {i.code: i for i in (
    # carriers (level 1)
    Item("01000", "electricity", "电", "electricity", Confidence.several),
    Item("02000", "water", "水", "water", Confidence.one),
    Item("03A00", "natural gas", "天然气", "gas", Confidence.one),
    Item("04000", "district heat", "集中供热量", "heat", Confidence.one),
    # the four electricity items (level 2)
    Item("01A00", "lighting and sockets", "照明插座用电", "electricity", Confidence.several),
    Item("01B00", "HVAC", "空调用电", "electricity", Confidence.several),
    Item("01C00", "power (lifts, pumps, fans)", "动力用电", "electricity", Confidence.several),
    Item("01D00", "special uses", "特殊用电", "electricity", Confidence.several),
    # sub-items (level 3)
    Item("01A10", "room lighting and sockets", "室内照明与插座", "electricity", Confidence.one),
    Item("01A20", "corridor and emergency lighting", "走廊与应急照明", "electricity", Confidence.two),
    Item("01A30", "outdoor lighting", "室外景观照明", "electricity", Confidence.one),
    Item("01B10", "cooling and heating plant", "冷热站", "electricity", Confidence.one),
    Item("01B20", "HVAC terminal units", "空调末端", "electricity", Confidence.one),
    Item("01C10", "lifts", "电梯", "electricity", Confidence.two),
    Item("01C20", "pumps", "水泵", "electricity", Confidence.two),
    Item("01C30", "fans", "通风机", "electricity", Confidence.one),
    Item("01D10", "information centre", "信息中心", "electricity", Confidence.two),
    Item("01D20", "kitchen and canteen", "厨房餐厅", "electricity", Confidence.one),
    Item("01D30", "other special uses", "其他特殊用电", "electricity", Confidence.one),
)}
OURS = {
    UNMETERED: Item(UNMETERED, "unmetered and losses", "未计量及损耗", "", Confidence.ours),
    UNASSIGNED: Item(UNASSIGNED, "metered, no item", "已计量未分项", "", Confidence.ours),
}


def stem(code: str) -> str:
    """``01B10`` → ``01B1``; ``01B00`` → ``01B``; ``01000`` → ``01``; ``03A00`` → ``03A``."""
    return code.rstrip("0") if len(code.rstrip("0")) >= 2 else code[:2]


def level(code: str) -> int:
    """1 for a carrier (01000, 03A00 counts as the gas carrier), 2 for an item, 3 for a sub-item."""
    if code in OURS:
        return 2
    s = stem(code)
    if s[:2] in ("02", "03", "04", "05"):
        return 1
    return max(1, len(s) - 1)


def within(code: str, other: str) -> bool:
    """``code`` is ``other`` or one of its sub-items (at any depth)."""
    return stem(code).startswith(stem(other))


def carrier_of(code: str) -> str | None:
    return _CARRIER_OF_PREFIX.get(code[:2])


def at_level(code: str, lvl: int) -> str:
    """The code's ancestor at ``lvl`` (2: the item, 3: the sub-item), or the code itself when it is
    not that deep (a meter itemised ``01B00`` is, at sub-item level, "HVAC not split into sub-items")."""
    if code in OURS or level(code) <= lvl:
        return code
    s = stem(code)
    return (s[:lvl + 1]).ljust(5, "0")


def describe(code: str) -> Item:
    return ITEMS.get(code) or OURS.get(code) or Item(code, code, code, carrier_of(code) or "", Confidence.one)


@dataclass(frozen=True)
class ItemProblem:
    meter: str
    field: str
    message: str


def check_items(meters: Iterable) -> list[ItemProblem]:
    """Item codes of a site's meters (``edge.config.Meter``-like: id, carrier, parent, item): known to
    the classification, of the meter's carrier, and within the item of the nearest itemised meter
    above (a lighting meter behind the HVAC meter would be counted in both items)."""
    ms = list(meters)
    by_id = {m.id: m for m in ms}
    out: list[ItemProblem] = []
    for m in ms:
        if m.item is None:
            continue
        carrier = m.carrier.value if hasattr(m.carrier, "value") else str(m.carrier)
        if m.item not in ITEMS:
            known = ", ".join(c for c, i in ITEMS.items() if i.carrier == carrier)
            out.append(ItemProblem(m.id, "item", f"unknown item {m.item!r} (known for {carrier}: {known})"))
            continue
        if ITEMS[m.item].carrier != carrier:
            out.append(ItemProblem(m.id, "item", f"item {m.item} ({ITEMS[m.item].name}) is "
                                                 f"{ITEMS[m.item].carrier}, this meter measures {carrier}"))
            continue
        cur = by_id.get(m.parent) if m.parent else None
        hops = 0
        while cur is not None and cur.item is None and hops < len(ms):
            cur = by_id.get(cur.parent) if cur.parent else None
            hops += 1
        if cur is not None and cur.item is not None and not within(m.item, cur.item):
            out.append(ItemProblem(m.id, "item", f"item {m.item} ({ITEMS[m.item].name}) is not within {cur.item} "
                                                 f"({describe(cur.item).name}) of {cur.id!r} above it: its energy "
                                                 f"would be counted in both items"))
    return out
