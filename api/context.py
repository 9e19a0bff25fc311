"""What the API is handed: it reads state and data through these, and computes nothing itself."""

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
