"""Routes that accept only the query parameters they declare.

A misspelt or outdated parameter (``?end=`` for ``?to=``, ``?orgg=``) used to be ignored, so a
range query silently answered for another range. ``StrictQueryRoute`` answers 400 instead, an
RFC 9457 problem naming each unknown parameter and the ones the route takes. What a route takes is
read from its own declaration (the FastAPI dependant of the endpoint and of its dependencies), so
the check, the OpenAPI document and the handler cannot disagree. Only ``/v1`` routes are strict.

Used as FastAPI's documented custom route class: ``app.router.route_class = StrictQueryRoute``
(or ``APIRouter(route_class=StrictQueryRoute)``).
"""

from __future__ import annotations

from typing import Any, Callable, Coroutine

import time

from fastapi import Request, Response
from fastapi.routing import APIRoute

from api import problems
from api.cache import Entry

STRICT_PREFIX = "/v1"


def declared_query_names(dependant: Any) -> frozenset[str]:
    """The query parameter names (aliases) of a route's dependant and of all its sub-dependencies."""
    names: set[str] = set()
    stack = [dependant]
    while stack:
        d = stack.pop()
        names.update(f.alias for f in d.query_params)
        stack.extend(d.dependencies)
    return frozenset(names)


def unknown_query_problem(request: Request, unknown: list[str], allowed: frozenset[str]) -> Response:
    takes = ", ".join(sorted(allowed)) if allowed else "none"
    return problems.problem(
        400, "Bad Request",
        f"unknown query parameter{'s' if len(unknown) > 1 else ''}: {', '.join(unknown)} (this route takes: {takes})",
        instance=request.url.path,
        errors=[{"loc": ["query", name], "msg": "unknown query parameter"} for name in unknown])


class StrictQueryRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        if not self.path.startswith(STRICT_PREFIX):
            return handler
        allowed = declared_query_names(self.dependant)

        async def strict_handler(request: Request) -> Response:
            if request.scope.get("query_string"):
                unknown = sorted({k for k in request.query_params.keys() if k not in allowed})
                if unknown:
                    return unknown_query_problem(request, [u[:60] for u in unknown[:20]], allowed)
            return await handler(request)

        return strict_handler


class CachedQueryRoute(StrictQueryRoute):
    """A ``/v1`` GET route whose answers ``api.cache`` may keep: before FastAPI solves the route's
    parameters and dependencies, the caller is authenticated (and rate-limited) and a kept answer for
    the same path, query string and org scope is served when the store has not changed what it read.
    Otherwise the route runs; when its endpoint called ``api.cache.cacheable`` and answered 200, the
    body is kept."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def cached_handler(request: Request) -> Response:
            api = request.app.state.api
            cache = api.cache
            if request.method != "GET" or not cache.enabled:
                return await handler(request)
            p = await api.guard.principal(request)
            request.state.principal = p   # the ``Who`` dependency takes it from here
            key = (request.scope["path"], request.scope.get("query_string", b""), p.org)
            body = cache.get(key, time.time_ns())
            if body is not None:
                return Response(body, media_type="application/json")
            response = await handler(request)
            note = getattr(request.state, "cacheable", None)
            if note is not None and response.status_code == 200 and isinstance(getattr(response, "body", None), bytes):
                cache.put(key, Entry(*note[:5], response.body))
            return response

        return cached_handler
