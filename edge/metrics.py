"""Delivery metrics in a prometheus-client registry, and the Prometheus text for the API's /metrics.

Every service instance owns one ``Metrics`` (its own ``CollectorRegistry``, not the process-global
one), so tests and several instances in one process do not collide. Names follow Prometheus
conventions: counters end in ``_total``, durations are in seconds.

    edge_points_received_total        points handed to the outbox (put)
    edge_points_committed_total       points durably committed to the outbox
    edge_points_delivered_total       points the store confirmed
    edge_points_retried_total         points in batches that had to be sent again
    edge_points_dead_lettered_total   points the store refused (moved to the dead-letter table)
    edge_points_dropped_total         points the full outbox dropped or thinned (counter readings only)
    edge_points_thinned_total         of those, thinned (every Nth reading and each day's first and last kept)
    edge_points_held_back_total       points refused while the outbox was full (their source keeps them
                                      and offers them again: one point may be counted more than once)
    edge_points_rejected_total        points that could not be encoded as line protocol
    edge_payloads_dead_lettered_total payloads collectors could not decode
    edge_outbox_depth_points          points waiting in the outbox
    edge_outbox_oldest_age_seconds    age of the oldest waiting point
    edge_outbox_consumer_lag_points   points a consumer of the outbox (label consumer) has not taken yet
    edge_outbox_commit_seconds        commit latency (put -> durable), histogram
    edge_sink_write_seconds           one HTTP/store write, histogram
    edge_sink_state                   0 ok, 1 retrying, 2 blocked (401/403/404: needs an operator)

``count(name, n, **labels)`` makes other counters on demand (``edge_<name>_total``) so the
service's ``Ingest.count`` can be backed by the same registry; ``gauge_source`` adds a gauge read at
scrape time from a component's own state (``edge_modbus_bus_cycle_seconds{bus}``: each RS-485
line's measured cycle, beside ``edge_modbus_bus_wire_seconds{bus}``, its computed wire time).
"""

from __future__ import annotations

import re
import threading
from typing import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

_NAME = re.compile(r"[^a-zA-Z0-9_]")

CONTENT_TYPE = CONTENT_TYPE_LATEST

SINK_STATES = {"ok": 0, "retrying": 1, "blocked": 2}


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.points_received = Counter("edge_points_received", "Points handed to the outbox", registry=r)
        self.points_committed = Counter("edge_points_committed", "Points durably committed to the outbox", registry=r)
        self.points_delivered = Counter("edge_points_delivered", "Points the store confirmed", registry=r)
        self.points_retried = Counter("edge_points_retried", "Points in batches sent again after a failure", registry=r)
        self.points_dead_lettered = Counter("edge_points_dead_lettered", "Points the store refused", registry=r)
        self.points_dropped = Counter("edge_points_dropped", "Points the full outbox dropped or thinned", registry=r)
        self.points_thinned = Counter("edge_points_thinned", "Points the full outbox thinned away", registry=r)
        self.points_held_back = Counter("edge_points_held_back", "Points refused while the outbox was full "
                                        "(their source keeps them)", registry=r)
        self.points_rejected = Counter("edge_points_rejected", "Points that could not be encoded as line protocol", registry=r)
        self.payloads_dead_lettered = Counter("edge_payloads_dead_lettered", "Payloads collectors could not decode", registry=r)
        self.outbox_depth = Gauge("edge_outbox_depth_points", "Points waiting in the outbox", registry=r)
        self.outbox_oldest_age = Gauge("edge_outbox_oldest_age_seconds", "Age of the oldest waiting point", registry=r)
        self.outbox_consumer_lag = Gauge("edge_outbox_consumer_lag_points", "Points a consumer of the outbox has not "
                                         "taken yet", labelnames=("consumer",), registry=r)
        self.commit_latency = Histogram(
            "edge_outbox_commit_seconds", "Outbox commit latency (put until durable)", registry=r,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5))
        self.write_latency = Histogram(
            "edge_sink_write_seconds", "Duration of one write to the store", registry=r,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0))
        self.sink_state = Gauge("edge_sink_state", "0 ok, 1 retrying, 2 blocked (needs an operator)", registry=r)
        self._extra: dict[str, tuple[Counter, tuple[str, ...]]] = {}
        self._lock = threading.Lock()

    def bind_outbox(self, depth: Callable[[], int], oldest_age_s: Callable[[], float]) -> None:
        """Make the depth and age gauges read the outbox at scrape time."""
        self.outbox_depth.set_function(depth)
        self.outbox_oldest_age.set_function(oldest_age_s)

    def bind_consumer(self, name: str, lag: Callable[[], int]) -> None:
        """Make ``edge_outbox_consumer_lag_points{consumer=name}`` read ``lag()`` at scrape time."""
        self.outbox_consumer_lag.labels(consumer=name).set_function(lag)

    def unbind_consumer(self, name: str) -> None:
        try:
            self.outbox_consumer_lag.remove(name)
        except KeyError:
            pass

    def set_sink_state(self, state: str) -> None:
        self.sink_state.set(SINK_STATES[state])

    def count(self, name: str, n: int = 1, **labels: str) -> None:
        """Bump ``edge_<name>_total{labels}``; the counter is created on first use with these label names."""
        metric = "edge_" + _NAME.sub("_", name)
        keys = tuple(sorted(labels))
        with self._lock:
            entry = self._extra.get(metric)
            if entry is None:
                entry = (Counter(metric, f"{name} (counted by the service)", labelnames=keys,
                                 registry=self.registry), keys)
                self._extra[metric] = entry
        counter, known = entry
        if keys != known:
            # label sets must be stable per counter; an unexpected one is still counted, never lost
            values = {k: str(labels.get(k, "")) for k in known}
            counter.labels(**values).inc(n) if known else counter.inc(n)
            return
        (counter.labels(**labels) if keys else counter).inc(n)

    def gauge_source(self, name: str, doc: str, labelnames: tuple[str, ...],
                     read: Callable[[], Iterable[tuple[tuple[str, ...], float | None]]]) -> None:
        """A gauge family read at scrape time: ``read()`` gives (label values, value) pairs (None
        values are left out). For state a component keeps itself, e.g. each RS-485 bus's cycle."""
        self.registry.register(_GaugeSource(name, doc, labelnames, read))

    def value(self, name: str, **labels: str) -> float:
        """Current value of a sample, by its exposed name (e.g. ``edge_points_dropped_total``)."""
        v = self.registry.get_sample_value(name, labels or None)
        return 0.0 if v is None else v

    def prometheus_text(self) -> bytes:
        return prometheus_text(self.registry)

    def text(self) -> str:
        """Prometheus text as ``str`` (serve with ``CONTENT_TYPE``)."""
        return prometheus_text(self.registry).decode("utf-8")


class _GaugeSource:
    """A custom collector (prometheus_client's documented extension point) for ``gauge_source``."""

    def __init__(self, name: str, doc: str, labelnames: tuple[str, ...], read) -> None:
        self.name, self.doc, self.labelnames, self.read = name, doc, labelnames, read

    def collect(self):
        g = GaugeMetricFamily(self.name, self.doc, labels=list(self.labelnames))
        for labels, value in self.read():
            if value is not None:
                g.add_metric(list(labels), float(value))
        yield g

    def describe(self):
        return [GaugeMetricFamily(self.name, self.doc, labels=list(self.labelnames))]


def prometheus_text(registry: CollectorRegistry) -> bytes:
    """The registry in Prometheus text exposition format (serve with ``CONTENT_TYPE``)."""
    return generate_latest(registry)
