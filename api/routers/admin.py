"""Administration: the dead letters of the outbox (an admin of the whole site), API keys and the audit
log (an admin, within its org). Every change is audited (``api.security.Guard.record``)."""

import asyncio
from typing import Any, Literal

from fastapi import APIRouter, HTTPException, Request

from api.keys import KeyError_, KeyStore, LastAdminKey, Role
from api.params import Cursor, Limit
from api.problems import ONE, READ, responses
from api.reads import BadCursor, decode_int_cursor, encode_int_cursor, iso
from api.routing import StrictQueryRoute
from api.schemas import AuditOut, DeadLetterOut, KeyCreate, KeyCreated, KeyOut, Page, Replayed
from api.state import Api, ApiState, Who, bad_cursor
from edge.config import check_org_path

router = APIRouter(route_class=StrictQueryRoute)


# -- dead letters ------------------------------------------------------------------------------------
def outbox_of(api: ApiState) -> Any:
    """The service's outbox (or one the caller handed in ``extras``), or None."""
    return getattr(api.service, "outbox", None) if api.service is not None else api.ctx.extras.get("outbox")


def int_cursor(cursor: str | None) -> int | None:
    if not cursor:
        return None
    try:
        return decode_int_cursor(cursor)
    except BadCursor as e:
        raise bad_cursor(e) from None


@router.get("/v1/dead-letters", response_model=Page[DeadLetterOut], tags=["admin"], responses=READ)
async def dead_letters(p: Who, api: Api, request: Request, limit: Limit = 100, cursor: Cursor = None,
                       kind: Literal["point", "invalid", "payload"] | None = None) -> Page[DeadLetterOut]:
    """What the store refused and payloads collectors could not decode, newest first (admin of the whole site)."""
    api.guard.require_whole_site(request, p)
    outbox = outbox_of(api)
    if outbox is None:
        return Page[DeadLetterOut](items=[], next_cursor=None)
    before = int_cursor(cursor)
    rows = await asyncio.to_thread(outbox.dead_letters, limit + 1, kind, before)
    page = rows[:limit]
    nxt = encode_int_cursor(page[-1].id) if len(rows) > limit else None
    return Page[DeadLetterOut](next_cursor=nxt, items=[DeadLetterOut(
        id=d.id, at=iso(d.at_ns, api.tz), source=d.source, topic=d.topic, kind=d.kind, reason=d.reason,
        payload=d.payload.decode("utf-8", "replace")) for d in page])


@router.post("/v1/dead-letters/{dead_letter_id}/replay", response_model=Replayed, tags=["admin"], responses=ONE)
async def replay_dead_letter(dead_letter_id: int, p: Who, api: Api, request: Request) -> Replayed:
    """Put a refused point back into the outbox (admin of the whole site; audited)."""
    api.guard.require_whole_site(request, p)
    outbox = outbox_of(api)
    if outbox is None:
        raise HTTPException(404, "no outbox")
    n = await asyncio.to_thread(outbox.replay_dead_letters, [dead_letter_id])
    api.guard.record(request, p, 200, "dead_letter_replay", f"id={dead_letter_id} points={n}")
    return Replayed(replayed=n)


# -- keys --------------------------------------------------------------------------------------------
def key_out(api: ApiState, k) -> KeyOut:
    return KeyOut(id=k.id, org=k.org, role=k.role.value, name=k.name, created=iso(k.created_ns, api.tz),
                  revoked=None if k.revoked_ns is None else iso(k.revoked_ns, api.tz))


def need_keys(api: ApiState) -> KeyStore:
    if api.keys is None:
        raise HTTPException(404, "API keys are off (api.auth is false)")
    return api.keys


@router.get("/v1/keys", response_model=list[KeyOut], tags=["admin"], responses=ONE)
async def list_keys(p: Who, api: Api, request: Request) -> list[KeyOut]:
    """Keys within the admin's org (never their secrets)."""
    api.guard.require(request, p, Role.admin)
    return [key_out(api, k) for k in need_keys(api).list(within=p.org)]


@router.post("/v1/keys", response_model=KeyCreated, status_code=201, tags=["admin"], responses=ONE)
async def create_key(body: KeyCreate, p: Who, api: Api, request: Request) -> KeyCreated:
    """Make a key for an org within the admin's own; the token is in this answer only (audited)."""
    guard = api.guard
    guard.require(request, p, Role.admin)
    ks = need_keys(api)
    try:
        check_org_path(body.org)
    except ValueError:
        guard.refuse(request, p, 403, "forbidden", f"key org {body.org[:100]!r} is not an org path")
        raise HTTPException(403, "org is not an org path within your scope") from None
    if not p.sees(body.org):
        guard.refuse(request, p, 403, "forbidden", f"key org {body.org!r} outside scope")
        raise HTTPException(403, "org is outside your scope")
    try:
        k, token = ks.create(body.org, body.role, body.name)
    except KeyError_ as e:
        raise HTTPException(400, str(e)) from None
    guard.record(request, p, 201, "key_create", f"id={k.id} org={k.org} role={k.role.value}")
    return KeyCreated(**key_out(api, k).model_dump(), token=token)


@router.delete("/v1/keys/{key_id}", response_model=KeyOut, tags=["admin"], responses={**ONE, **responses(409)})
async def revoke_key(key_id: str, p: Who, api: Api, request: Request) -> KeyOut:
    """Revoke a key within the admin's org (audited). The last active admin key of a top-level org is
    refused (409): create another first."""
    guard = api.guard
    guard.require(request, p, Role.admin)
    ks = need_keys(api)
    try:
        k = ks.get(key_id)
    except KeyError_:
        raise HTTPException(404, f"no key {key_id!r}") from None
    if not p.sees(k.org):
        raise guard.hidden(request, p, f"key {key_id!r}", f"no key {key_id!r}")
    try:
        k = ks.revoke(key_id)
    except LastAdminKey as e:
        guard.refuse(request, p, 409, "key_revoke_refused", f"id={key_id}: last admin key of its org")
        raise HTTPException(409, str(e)) from None
    guard.record(request, p, 200, "key_revoke", f"id={key_id}")
    return key_out(api, k)


# -- audit -------------------------------------------------------------------------------------------
@router.get("/v1/audit", response_model=Page[AuditOut], tags=["admin"], responses=ONE)
async def audit_log(p: Who, api: Api, request: Request, limit: Limit = 100, cursor: Cursor = None) -> Page[AuditOut]:
    """The audit log (GB/T 22239): changes and refused accesses, newest first, within the admin's org.
    Refusals are aggregated per client address, minute, key, status and action (`count`)."""
    api.guard.require(request, p, Role.admin)
    if api.keys is None:
        return Page[AuditOut](items=[], next_cursor=None)
    before = int_cursor(cursor)
    await api.guard.audit.drain()
    rows = await asyncio.to_thread(api.keys.audit_entries, limit + 1, before, p.org)
    page = rows[:limit]
    return Page[AuditOut](next_cursor=encode_int_cursor(page[-1].id) if len(rows) > limit else None, items=[
        AuditOut(id=a.id, at=iso(a.at_ns, api.tz), key_id=a.key_id, org=a.org, role=a.role, method=a.method,
                 path=a.path, status=a.status, action=a.action, detail=a.detail, client=a.client,
                 count=a.count) for a in page])
