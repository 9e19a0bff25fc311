"""Who is asking, what they may see, and the audit trail: the API's request-time side of ``api.keys``.

``Guard`` is built once per app. Its ``principal`` dependency turns the request's key
(``Authorization: Bearer sek_...`` or ``X-API-Key: sek_...``; ``?key=`` only on the live stream,
since browsers' EventSource cannot set headers) into a ``Principal``, applies the per-key rate
limit, and refuses with 401 / 429. ``scraper`` does the same for ``/metrics``, which takes a key
of role ``metrics`` or ``admin`` whose org covers the whole site. With ``api.auth`` off every
request is an admin at the root.

A token not seen recently costs an argon2 check (about 0.1 s of CPU by design). It never runs on
the event loop: at most ``hash_threads`` run at once, in threads of their own, the same token checked by
several requests at once is hashed once, and before hashing, a failed-attempt limit per client
address and per key id (``api.keys.FailedAttempts``) answers 429 without hashing at all. A
verified token is then cached by the key store.

Refusals (401, 403, 429, and 404 for things that exist in another org) and every change go to
the audit trail (``api.audit.AuditTrail``: the local ``audit`` table, refusals aggregated, and
Points of measurement ``audit`` through the service's ingest). No key material is recorded:
paths are redacted (``api.keys.redact_target``), and ``RedactAccessLog`` does the same for
uvicorn's access log.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from fastapi import HTTPException, Request

from api.audit import AuditTrail
from api.keys import ANONYMOUS_ADMIN, FailedAttempts, KeyStore, PendingCheck, Principal, RateLimiter, Role, \
    redact_target
from edge.config import Site, check_org_path, org_within

log = logging.getLogger(__name__)


class Guard:
    def __init__(self, site: Site, keys: KeyStore | None, *, auth: bool, ingest: Any = None,
                 rate_per_s: float = 50.0, burst: float = 100.0, audit_max_rows: int = 100_000,
                 failures_burst: int = 10, failure_refill_s: float = 10.0, hash_threads: int = 2) -> None:
        self.site = site
        self.keys = keys
        self.auth = auth
        self.limiter = RateLimiter(rate_per_s, burst)
        self.failures = FailedAttempts(failures_burst, failure_refill_s)
        roots = [o.path for o in site.orgs if o.parent is None]
        self.root_org = roots[0] if len(roots) == 1 else ""
        self.audit = AuditTrail(keys, ingest, root_org=self.root_org, max_rows=audit_max_rows)
        self.hash_threads = hash_threads
        self._hashing: ThreadPoolExecutor | None = None  # its own threads: a flood cannot take the loop's default pool
        self._checks: dict[bytes, asyncio.Task] = {}     # token digest -> the argon2 check under way
        self.refused = 0
        self.wrong_secrets = 0     # argon2 checks that failed
        self.auth_throttled = 0    # attempts refused before hashing (failed-attempt limit)

    # -- the dependencies ------------------------------------------------------------------------
    async def principal(self, request: Request) -> Principal:
        """The caller of a ``/v1`` route: any key but a metrics one, within its rate limit."""
        if not self.auth:
            return ANONYMOUS_ADMIN
        p = await self.authenticate(request)
        if p.role is Role.metrics:
            self.refuse(request, p, 403, "forbidden", "metrics key on a /v1 route")
            raise HTTPException(403, "a metrics key reads /metrics only")
        self._rate(request, p)
        return p

    async def scraper(self, request: Request) -> Principal:
        """The caller of ``/metrics``: a metrics or admin key whose org covers the whole site."""
        if not self.auth:
            return ANONYMOUS_ADMIN
        p = await self.authenticate(request)
        if p.role not in (Role.metrics, Role.admin) or not self.covers_site(p):
            self.refuse(request, p, 403, "forbidden", "needs a metrics or admin key covering the whole site")
            raise HTTPException(403, "/metrics needs a key of role metrics or admin whose org covers the whole site")
        self._rate(request, p)
        return p

    async def authenticate(self, request: Request) -> Principal:
        if not self.auth:
            return ANONYMOUS_ADMIN
        token = _token(request)
        found = self.keys.lookup(token) if (token and self.keys is not None) else None
        if isinstance(found, Principal):
            return found
        if isinstance(found, PendingCheck):
            p = await self._check(request, found)
            if p is not None:
                return p
            detail = f"wrong secret for key {found.key_id}"
        else:
            detail = "missing or invalid key" if token else "no key"
        self.refuse(request, None, 401, "unauthenticated", detail)
        raise HTTPException(401, "a valid API key is required (Authorization: Bearer sek_...)",
                            headers={"WWW-Authenticate": 'Bearer realm="sensing-edge"'})

    def _rate(self, request: Request, p: Principal) -> None:
        wait = self.limiter.take(p.key_id)
        if wait > 0:
            self.refuse(request, p, 429, "rate_limited", f"retry after {wait:.2f} s")
            raise HTTPException(429, "rate limit exceeded for this key",
                                headers={"Retry-After": str(max(1, round(wait + 0.5)))})

    # -- the argon2 check, off the event loop ----------------------------------------------------
    async def _check(self, request: Request, pending: PendingCheck) -> Principal | None:
        loop = asyncio.get_running_loop()
        task = self._checks.get(pending.digest)
        if task is None or task.get_loop() is not loop:
            client = client_address(request)
            wait = self.failures.reserve(client, pending.key_id)
            if wait > 0:
                self.auth_throttled += 1
                self.refuse(request, None, 429, "auth_throttled", f"failed key attempts for key {pending.key_id}")
                raise HTTPException(429, "too many failed key attempts from this address or for this key",
                                    headers={"Retry-After": str(max(1, round(wait + 0.5)))})
            # a task of its own: a client that goes away does not cancel the check others may wait for
            task = loop.create_task(self._hash(client, pending))
            self._checks[pending.digest] = task
            task.add_done_callback(lambda t, d=pending.digest: self._checks.pop(d) if self._checks.get(d) is t else None)
        return await asyncio.shield(task)

    async def _hash(self, client: str, pending: PendingCheck) -> Principal | None:
        if self._hashing is None:
            self._hashing = ThreadPoolExecutor(self.hash_threads, thread_name_prefix="argon2")
        p = await asyncio.get_running_loop().run_in_executor(self._hashing, self.keys.check, pending)
        if p is None:
            self.wrong_secrets += 1
        else:
            self.failures.succeeded(client, pending.key_id)
        return p

    # -- checks used by routes -------------------------------------------------------------------
    def covers_site(self, p: Principal) -> bool:
        return p.org is None or all(org_within(o.path, p.org) for o in self.site.orgs)

    def require(self, request: Request, p: Principal, role: Role) -> None:
        if not p.may(role):
            self.refuse(request, p, 403, "forbidden", f"needs role {role.value}")
            raise HTTPException(403, f"this needs the {role.value} role")

    def require_whole_site(self, request: Request, p: Principal) -> None:
        """Things not tagged by org (dead letters): only an admin whose scope covers every org."""
        self.require(request, p, Role.admin)
        if not self.covers_site(p):
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

    def hidden(self, request: Request, p: Principal, what: str, answer: str | None = None) -> HTTPException:
        """A thing that exists but in another org: audited, answered as 404 exactly as a missing one
        (``answer``, default ``no <what>``): its existence is not told."""
        self.refuse(request, p, 404, "out_of_scope", what)
        return HTTPException(404, answer if answer is not None else f"no {what}")

    # -- audit -----------------------------------------------------------------------------------
    def refuse(self, request: Request, p: Principal | None, status: int, action: str, detail: str) -> None:
        self.refused += 1
        self.audit.refusal(p, client_address(request), request.method, request.url.path, request.url.query,
                           status, action, detail)

    def record(self, request: Request, p: Principal | None, status: int, action: str, detail: str = "") -> None:
        self.audit.change(p, client_address(request), request.method, request.url.path, request.url.query,
                          status, action, detail)


def client_address(request: Request) -> str:
    return request.client.host if request.client is not None else "-"


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


class RedactAccessLog(logging.Filter):
    """Takes key material out of uvicorn's access log lines (``?key=`` of the live stream)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        # uvicorn.access: (client, method, path with query, http version, status)
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
            path, _, query = args[2].partition("?")
            record.args = args[:2] + (redact_target(path, query),) + args[3:]
        return True


def install_access_log_redaction(logger_name: str = "uvicorn.access") -> None:
    """Once per process: every API served by uvicorn here logs no key."""
    logger = logging.getLogger(logger_name)
    if not any(isinstance(f, RedactAccessLog) for f in logger.filters):
        logger.addFilter(RedactAccessLog())
