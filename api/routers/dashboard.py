"""The dashboard's page at ``/``; its scripts and styles are the static files ``create_app`` mounts at
``/static`` (``STATIC``: plain JavaScript, SVG and canvas, vendored libraries, nothing from a CDN)."""

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

from api.routing import StrictQueryRoute

STATIC = Path(__file__).resolve().parent.parent / "static"

router = APIRouter(route_class=StrictQueryRoute)


@router.get("/", include_in_schema=False)
async def dashboard() -> FileResponse:
    return FileResponse(STATIC / "index.html", media_type="text/html")
