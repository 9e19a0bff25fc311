"""The dashboard's files without a browser: the vendored libraries are the files VENDOR.md pins, the
page and its scripts name no host outside the edge (no CDN: the page works offline), and the edge
serves every file the page loads."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import httpx

from api.app import create_app
from api.routers.dashboard import STATIC

VENDOR = STATIC / "vendor"


def pinned() -> dict[str, str]:
    text = (VENDOR / "VENDOR.md").read_text(encoding="utf-8")
    block = text.split("## sha256 of the files served", 1)[1]
    return {name: digest for digest, name in re.findall(r"^([0-9a-f]{64})  (\S+)$", block, flags=re.M)}


def test_vendored_files_are_the_pinned_ones():
    files = {str(p.relative_to(VENDOR)) for p in VENDOR.rglob("*") if p.is_file()} - {"VENDOR.md", "refresh.sh"}
    pins = pinned()
    assert files == set(pins), "a vendored file is not listed in VENDOR.md, or a listed one is missing"
    for name, digest in pins.items():
        assert hashlib.sha256((VENDOR / name).read_bytes()).hexdigest() == digest, name
    script = (VENDOR / "refresh.sh").read_text(encoding="utf-8")
    assert "LEAFLET=1.9.4" in script and "UPLOT=1.6.32" in script     # the script refreshes what the table pins


def own_files() -> list[Path]:
    return [STATIC / "index.html", STATIC / "dashboard.css", *sorted((STATIC / "js").glob("*.js"))]


def test_the_page_and_its_scripts_name_no_outside_host():
    for p in own_files():
        text = p.read_text(encoding="utf-8")
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}/", text, flags=re.I), p.name
        assert "import(" not in text or p.suffix != ".js", p.name   # modules are imported statically, by path


async def test_the_edge_serves_every_file_the_page_loads(env):
    app = create_app(env.ctx)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        page = (await c.get("/")).text
        refs = re.findall(r'(?:src|href)="(/static/[^"]+)"', page)
        for js in (STATIC / "js").glob("*.js"):
            refs += [f"/static/js/{m}" for m in re.findall(r'from "\./([a-z]+\.js)"', js.read_text(encoding="utf-8"))]
        css = (VENDOR / "leaflet" / "leaflet.css").read_text(encoding="utf-8")
        refs += [f"/static/vendor/leaflet/{m}" for m in re.findall(r"url\((images/[^)]+)\)", css)]
        assert {"/static/vendor/leaflet/leaflet.js", "/static/vendor/uplot/uPlot.iife.min.js", "/static/js/main.js"} <= set(refs)
        for ref in sorted(set(refs)):
            r = await c.get(ref)
            assert r.status_code == 200, ref
            if ref.endswith(".js"):
                assert "javascript" in r.headers["content-type"], ref   # modules need a JavaScript MIME type
