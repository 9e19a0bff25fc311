"""Answers of the indicator reads kept while what they read is unchanged.

The indicators the province and the district view poll (``/v1/indicators/energy``, ``/v1/rollup``)
are written by the indicator job a few times a minute at most, and for a closed day, month or year
hardly ever again; answering each poll from the store again (and solving the route's dozen query
parameters again) cost about a millisecond of CPU per request, which at 50 clients is a queue. So
the answer (the JSON body) is kept, keyed by the route, its query string and the caller's org scope
(``api.routing.CachedQueryRoute``, before FastAPI parses a parameter), and served again while the
store's write generation of the measurements and days it read is the same
(``edge.store.EmbeddedStore.generation``: every write records a new number per measurement and UTC
day). A write into today's rows does not drop the answers about last month. Nothing is ever served
that the store has since changed: the generation is read before the store is, so an answer is kept
under a generation at most as new as what it read. Only 200s are kept; the caller is authenticated
and rate-limited on every request, kept answer or not.

With a query layer that cannot tell its write generation (InfluxDB: another process writes it),
nothing is cached; every request reads the store as before.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Hashable, Sequence


@dataclass(frozen=True, slots=True)
class Entry:
    """A kept answer: what it read (measurements, ``[start_ns, end_ns)``), the write generation it was
    read under, until when it holds at most (an answer about "until now": the minute it was rounded
    to), and the body."""

    measurements: tuple[str, ...]
    start_ns: int
    end_ns: int
    gen: int
    valid_until_ns: int
    body: bytes


class ReadCache:
    def __init__(self, query: Any, max_entries: int = 2048) -> None:
        self.query = query
        self.max_entries = max_entries
        self._entries: OrderedDict[Hashable, Entry] = OrderedDict()
        self.hits = self.misses = 0

    @property
    def enabled(self) -> bool:
        return self.query is not None and hasattr(self.query, "generation")

    def generation(self, measurements: Sequence[str], start_ns: int, end_ns: int) -> int | None:
        """The store's write generation over what a read will cover, or None (not cacheable)."""
        if not self.enabled or end_ns <= start_ns:
            return None
        return self.query.generation(measurements, start_ns, end_ns)

    def get(self, key: Hashable, now_ns: int) -> bytes | None:
        """The kept body for ``key`` if the store has not changed what it read since, else None."""
        e = self._entries.get(key)
        if e is None or now_ns >= e.valid_until_ns or self.generation(e.measurements, e.start_ns, e.end_ns) != e.gen:
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return e.body

    def put(self, key: Hashable, entry: Entry) -> None:
        self._entries[key] = entry
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)


def cacheable(request: Any, measurements: Sequence[str], start_ns: int, end_ns: int,
              valid_until_ns: int = 2**63 - 1) -> None:
    """An endpoint says its answer may be kept (``api.routing.CachedQueryRoute`` keeps it when the
    answer is a 200): the generation is read here, before the endpoint reads the store."""
    cache = request.app.state.api.cache
    gen = cache.generation(measurements, start_ns, end_ns)
    if gen is not None:
        request.state.cacheable = (tuple(measurements), int(start_ns), int(end_ns), gen, int(valid_until_ns))
