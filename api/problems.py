"""Errors as RFC 9457 problem details (``application/problem+json``), and how routes document them
in the OpenAPI document (``responses``, ``READ``, ``ONE``)."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.schemas import Problem

PROBLEM = "application/problem+json"
log = logging.getLogger("api")


def problem(status: int, title: str, detail: str = "", type_: str = "about:blank", **extra) -> JSONResponse:
    body = {"type": type_, "title": title, "status": status}
    if detail:
        body["detail"] = detail
    body.update(extra)
    return JSONResponse(body, status_code=status, media_type=PROBLEM)


def install(app: FastAPI) -> None:
    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        titles = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
                  405: "Method Not Allowed", 429: "Too Many Requests", 503: "Service Unavailable"}
        r = problem(exc.status_code, titles.get(exc.status_code, "Error"), str(exc.detail or ""), instance=str(request.url.path))
        for k, v in (exc.headers or {}).items():
            r.headers[k] = v
        return r

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", "")} for e in exc.errors()]
        return problem(422, "Unprocessable Content", "request parameters are invalid",
                       instance=str(request.url.path), errors=errors)


def install_fallback(app: FastAPI) -> None:
    """Unexpected errors answer as a problem too (500), logged with their traceback."""
    @app.exception_handler(Exception)
    async def _any(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error path=%s", request.url.path)
        return problem(500, "Internal Server Error", "unexpected error; see the service log", instance=str(request.url.path))


def responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI ``responses`` of a route's error statuses: each a problem+json ``Problem``."""
    text = {400: "bad cursor or parameters, or an unknown query parameter", 401: "no or invalid API key",
            403: "outside your org or role", 404: "not found (or not within your org)",
            409: "refused: it would leave the site without an admin key", 422: "invalid parameters",
            429: "rate limit, or too many failed key attempts; see Retry-After", 503: "the store is unavailable"}
    return {c: {"model": Problem, "description": text[c], "content": {PROBLEM: {"schema": {"$ref": "#/components/schemas/Problem"}}}}
            for c in codes}


READ = responses(400, 401, 403, 404, 422, 429, 503)  # a list
ONE = responses(400, 401, 403, 404, 422, 429, 503)   # one thing, or a list within one thing
