"""Operations: health and its probes (no key needed), and ``/metrics`` in Prometheus text format."""

from fastapi import APIRouter, Response

from api.problems import responses
from api.routing import StrictQueryRoute
from api.schemas import Health
from api.security import Guard
from api.state import Api, ApiState, Scraper
from edge import __version__

router = APIRouter(route_class=StrictQueryRoute)


def health_doc(api: ApiState) -> Health:
    """The service's health (``ApiContext.health``) with the API's own counters added."""
    ctx, guard = api.ctx, api.guard
    h = ctx.health()
    status = h.get("status", "ok")
    comps = dict(h.get("components", {}))
    comps.setdefault("store", {"attached": ctx.query is not None})
    comps["api"] = {"auth": api.auth, "refused": guard.refused, "live_events": api.hub.head,
                    "auth_throttled": guard.auth_throttled, "wrong_secrets": guard.wrong_secrets,
                    "audit": guard.audit.stats()}
    return Health(status=status, version=__version__, live=True, ready=status != "down", components=comps)


@router.get("/v1/health", response_model=Health, tags=["operations"],
            responses={503: {"model": Health, "description": "down"}})
async def health(response: Response, api: Api) -> Health:
    """Component status (broker, store, outbox depth, devices down). No key needed."""
    doc = health_doc(api)
    if doc.status == "down":
        response.status_code = 503
    return doc


@router.get("/v1/health/live", tags=["operations"], response_model=dict[str, bool])
async def health_live() -> dict[str, bool]:
    """The process answers (liveness probe)."""
    return {"live": True}


@router.get("/v1/health/ready", tags=["operations"], response_model=dict[str, bool],
            responses={503: {"description": "not ready", "model": dict[str, bool]}})
async def health_ready(response: Response, api: Api) -> dict[str, bool]:
    """Ready for traffic unless the service reports itself down (readiness probe)."""
    ready = health_doc(api).ready
    if not ready:
        response.status_code = 503
    return {"ready": ready}


@router.get("/metrics", tags=["operations"], response_class=Response,
            responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "Prometheus text format"},
                       **responses(401, 403, 429)})
async def metrics(p: Scraper, api: Api) -> Response:
    """Prometheus text. With auth on: a key of role `metrics` (or `admin`) whose org covers the whole site."""
    ctx = api.ctx
    body = ctx.metrics_text() if ctx.metrics_text else b""
    if isinstance(body, str):
        body = body.encode()
    return Response(body + api_metrics_text(api.guard, api.hub.head), media_type="text/plain; version=0.0.4; charset=utf-8")


def api_metrics_text(guard: Guard, live_events: int) -> bytes:
    """The API's own counters in Prometheus text format."""
    a = guard.audit.stats()
    rows = [
        ("edge_api_refused_total", "Requests refused by the API (401/403/404 out of scope/409/429)", guard.refused),
        ("edge_api_live_events_total", "Live events published to SSE clients", live_events),
        ("edge_api_auth_wrong_secrets_total", "Key checks (argon2) that failed", guard.wrong_secrets),
        ("edge_api_auth_throttled_total", "Key attempts refused (429) by the failed-attempt limit, without hashing",
         guard.auth_throttled),
        ("edge_api_audit_refusals_merged_total", "Refusals counted into an existing audit entry (same client, "
                                                 "minute, key, status, action) instead of a row of their own",
         a["refusals_merged"]),
        ("edge_api_audit_rows_pruned_total", "Oldest audit rows deleted to keep the table within api.audit_max_rows",
         a["rows_pruned"]),
        ("edge_api_audit_events_pruned_total", "Audited events (sum of counts) in the deleted rows", a["events_pruned"]),
        ("edge_api_audit_write_errors_total", "Audit writes that failed", a["write_errors"]),
    ]
    return "".join(f"# HELP {n} {h}\n# TYPE {n} counter\n{n} {v}\n" for n, h, v in rows).encode()
