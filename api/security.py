"""Who is asking, what they may see, and the audit trail: the API's request-time side of ``api.keys``.

``Guard`` is built once per app. Its ``principal`` dependency turns the request's key
(``Authorization: Bearer sek_...`` or ``X-API-Key: sek_...``; ``?key=`` only on the live stream,
since browsers' EventSource cannot set headers) into a ``Principal``, applies the per-key rate
limit, and refuses with 401 / 429. With ``api.auth`` off every request is an admin at the root.

Refusals (401, 403, 429, and 404 for things that exist in another org) and every change are
written to the audit log: the local ``audit`` table of the key store and, when the service's
ingest is there, a Point of measurement ``audit`` (tags ``key``, ``org``, ``action``; fields
``method``, ``path``, ``status``, ``detail``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from fastapi import HTTPException, Request

from api.keys import ANONYMOUS_ADMIN, KeyStore, Principal, RateLimiter, Role
from edge.config import Site, check_org_path, org_within
from edge.point import Point

log = logging.getLogger(__name__)


class Guard:
    def __init__(self, site: Site, keys: KeyStore | None, *, auth: bool, ingest: Any = None,
                 rate_per_s: float = 50.0, burst: float = 100.0) -> None:
        self.site = site
        self.keys = keys
        self.auth = auth
        self.ingest = ingest
        self.limiter = RateLimiter(rate_per_s, burst)
        roots = [o.path for o in site.orgs if o.parent is None]
        self.root_org = roots[0] if len(roots) == 1 else ""
        self._pending: set[asyncio.Task] = set()
        self.refused = 0

    # -- the dependency --------------------------------------------------------------------------
    async def principal(self, request: Request) -> Principal:
        if not self.auth:
            return ANONYMOUS_ADMIN
        token = _token(request)
        p = self.keys.verify(token) if (token and self.keys is not None) else None
        if p is None:
            self.refuse(request, None, 401, "unauthenticated", "missing or invalid key" if token else "no key")
            raise HTTPException(401, "a valid API key is required (Authorization: Bearer sek_...)",
                                headers={"WWW-Authenticate": 'Bearer realm="sensing-edge"'})
        wait = self.limiter.take(p.key_id)
        if wait > 0:
            self.refuse(request, p, 429, "rate_limited", f"retry after {wait:.2f} s")
            raise HTTPException(429, "rate limit exceeded for this key", headers={"Retry-After": str(max(1, round(wait + 0.5)))})
        return p

    # -- checks used by routes -------------------------------------------------------------------
    def require(self, request: Request, p: Principal, role: Role) -> None:
        if not p.may(role):
            self.refuse(request, p, 403, "forbidden", f"needs role {role.value}")
            raise HTTPException(403, f"this needs the {role.value} role")

    def require_whole_site(self, request: Request, p: Principal) -> None:
        """Things not tagged by org (dead letters): only an admin whose scope covers every org."""
        self.require(request, p, Role.admin)
        if p.org is not None and not all(org_within(o.path, p.org) for o in self.site.orgs):
            self.refuse(request, p, 403, "forbidden", "needs an admin key covering the whole site")
            raise HTTPException(403, "this needs an admin key whose org covers the whole site")

    def org_filter(self, request: Request, p: Principal, org: str | None) -> str | None:
        """The org scope a query runs with: the key's org, narrowed by an ``org`` filter within it.

        A filter that is not a well-formed org path, or not within the key's org, is refused (403)."""
        if org is None:
            return p.org
        try:
            check_org_path(org)
        except ValueError:
            self.refuse(request, p, 403, "forbidden", f"org filter {org[:100]!r} is not an org path")
            raise HTTPException(403, "org filter is not an org path within your scope") from None
        if not p.sees(org):
            self.refuse(request, p, 403, "forbidden", f"org filter {org!r} outside scope")
            raise HTTPException(403, "org filter is outside your scope")
        return org

    def hidden(self, request: Request, p: Principal, what: str) -> HTTPException:
        """A thing that exists but in another org: audited, answered as 404 (its existence is not told)."""
        self.refuse(request, p, 404, "out_of_scope", what)
        return HTTPException(404, f"no {what}")

    # -- audit -----------------------------------------------------------------------------------
    def refuse(self, request: Request, p: Principal | None, status: int, action: str, detail: str) -> None:
        self.refused += 1
        self.record(request, p, status, action, detail)

    def record(self, request: Request, p: Principal | None, status: int, action: str, detail: str = "") -> None:
        now = time.time_ns()
        path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        if self.keys is not None:
            try:
                self.keys.audit(now, p, request.method, path, status, action, detail)
            except Exception:  # the audit table must never take a request down
                log.exception("audit write failed")
        if self.ingest is not None:
            org = (p.org if p is not None and p.org else self.root_org)
            tags = {"key": p.key_id if p is not None else "-", "action": action}
            if org:
                tags["org"] = org
            point = Point("audit", tags, {"method": request.method, "path": path[:500], "status": status,
                                          "detail": detail[:500]}, now)
            try:
                task = asyncio.get_running_loop().create_task(self.ingest.submit([point]))
            except RuntimeError:
                return
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)


def _token(request: Request) -> str | None:
    h = request.headers.get("authorization")
    if h and h[:7].lower() == "bearer ":
        return h[7:].strip()
    x = request.headers.get("x-api-key")
    if x:
        return x.strip()
    if request.url.path == "/v1/live":
        return request.query_params.get("key")
    return None
