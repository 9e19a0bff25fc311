"""Errors as RFC 9457 problem details (``application/problem+json``)."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

PROBLEM = "application/problem+json"


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
    import logging

    log = logging.getLogger("api")

    @app.exception_handler(Exception)
    async def _any(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error path=%s", request.url.path)
        return problem(500, "Internal Server Error", "unexpected error; see the service log", instance=str(request.url.path))
