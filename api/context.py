"""What the API is handed: it reads state and data through these, and computes nothing itself.

``site``, ``live``, ``health``, ``query``, ``metrics_text`` and ``extras`` are what the service
and the demo pass. ``extras`` may hold ``service`` (the ``edge.app.service.EdgeService``: its
``outbox`` for dead letters, ``modbus.health()`` for per-meter status, ``ingest`` for audit
points, ``jt808`` for the terminals of ``/v1/terminals``), ``ingest`` (an ``edge.ingest.Ingest``
to use when there is no service) and ``terminals`` (a callable listing JT/T 808 terminals, when
there is no service).
The rest have defaults: ``keys`` (an ``api.keys.KeyStore``; when None and ``site.api.auth`` is on,
one is opened at ``api.keys.keys_path_for(site)``), ``auth`` (None: follow ``site.api.auth``),
the per-key rate limit, and the size of the live ring buffer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from edge.config import Site
from edge.live import LiveState


@dataclass
class ApiContext:
    site: Site
    live: LiveState
    health: Callable[[], dict[str, Any]] = lambda: {"status": "ok", "components": {}}
    query: Any = None  # edge.query.Query, when a store is attached
    metrics_text: Callable[[], bytes] | None = None
    extras: dict[str, Any] = field(default_factory=dict)
    keys: Any = None  # api.keys.KeyStore
    auth: bool | None = None
    rate_per_s: float = 50.0
    rate_burst: float = 100.0
    live_ring_size: int = 5000
