"""The HTTP API: ``/v1`` resources for the provincial platform, facility managers and dispatchers.

``create_app(ctx)`` assembles the FastAPI app from an ``ApiContext``: it builds the app's state
(``api.state.ApiState``: the site's maps, the guard, the live event hub), installs the problem+json
handlers and the access-log redaction, includes one router per resource family (``api/routers/``)
and mounts the dashboard. The routes live in the routers.

Every route takes the caller's ``Principal`` (``api.security.Guard``) and answers only with what lies
within its org: a thing of another org is a 404 (audited), an ``org`` filter outside the scope is a
403 (audited), and every series query runs with the key's org as a filter (``edge.query.Where.org``),
so aggregates and indicators never mix in other orgs' data. See docs/api.md.
"""

from typing import Any

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from api import problems, terminals
from api.context import ApiContext
from api.energy_items import items_router
from api.routers import admin, alerts, dashboard, indicators, live, meters, operations, rollup, site, vehicles
from api.routing import StrictQueryRoute
from api.security import install_access_log_redaction
from api.state import ApiState
from edge import __version__


def create_app(ctx: ApiContext) -> FastAPI:
    api = ApiState(ctx)
    install_access_log_redaction()

    app = FastAPI(
        title="sensing-edge",
        version=__version__,
        description="Energy and vehicle sensing for public institutions (DB33/T 2474-2022). "
                    "Times are ISO 8601 with offset; field names carry their units; lists are cursor-paged; "
                    "errors are RFC 9457 problem+json. Keys see their org and everything below it.",
    )
    app.router.route_class = StrictQueryRoute  # an undeclared query parameter on /v1 is a 400, not silence
    problems.install(app)
    problems.install_fallback(app)
    if api.auth:
        document_security(app)
    app.state.api = api
    app.state.ctx = ctx
    app.state.guard = api.guard
    app.state.hub = api.hub

    # Routes are matched in the order included (and listed so in the OpenAPI document). First the two
    # hot routes, the dashboards' and the province's polling (nothing else matches their paths), then
    # one router per resource family. A new family: its module in api/routers/, built with
    # APIRouter(route_class=StrictQueryRoute), and one include line below, before live and operations.
    app.include_router(meters.hot)
    app.include_router(vehicles.hot)
    app.include_router(indicators.cached)   # the polled indicator reads, answers kept (api/cache.py)
    app.include_router(rollup.router)
    app.include_router(site.router)
    app.include_router(meters.router)
    app.include_router(vehicles.router)
    app.include_router(indicators.router)
    app.include_router(alerts.router)
    app.include_router(admin.router)
    app.include_router(terminals.router(ctx, api.guard))               # JT/T 808 terminals (api/terminals.py)
    app.include_router(items_router(ctx.site, api.guard, lambda: ctx.query, api.tz))  # itemised energy (api/energy_items.py)
    app.include_router(live.router)
    app.include_router(operations.router)

    if dashboard.STATIC.is_dir():
        app.mount("/static", StaticFiles(directory=dashboard.STATIC), name="static")
        app.include_router(dashboard.router)
    return app


def document_security(app: FastAPI) -> None:
    """Declare the API keys in the OpenAPI document (bearer or X-API-Key; none for the health probes),
    the way FastAPI documents extending it: a wrapped ``app.openapi``."""
    plain = app.openapi
    open_routes = {"/v1/health", "/v1/health/live", "/v1/health/ready"}

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        doc = plain()
        doc.setdefault("components", {})["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer", "description": "Authorization: Bearer sek_..."},
            "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}}
        for path, ops in doc.get("paths", {}).items():
            for op in ops.values():
                op["security"] = [] if path in open_routes else [{"bearer": []}, {"apiKey": []}]
        app.openapi_schema = doc
        return doc

    app.openapi = openapi  # type: ignore[method-assign]
