"""The site, its org tree and its buildings: ``/v1/site``, ``/v1/orgs``, ``/v1/buildings``."""

from typing import Any

from fastapi import APIRouter, HTTPException, Request

from api.keys import Principal
from api.params import Cursor, Limit, OrgQ
from api.problems import ONE, READ
from api.routing import StrictQueryRoute
from api.schemas import BuildingOut, OrgNode, OrgOut, OrgTree, Page
from api.state import NO_ORG, Api, ApiState, Who
from edge import __version__
from edge.config import check_org_path, org_within

router = APIRouter(route_class=StrictQueryRoute)


@router.get("/v1/site", tags=["site"], responses=READ)
async def site_info(p: Who, api: Api) -> dict[str, Any]:
    """What the dashboard needs to start: site name, time zone, the fleet map's tiles (`map`: URL
    templates, subdomains, attribution, the datum they are drawn in), the caller's scope."""
    site = api.site
    a = site.api
    tiles = {"tile_url": a.tile_url, "overlay_url": a.tile_overlay_url, "subdomains": a.tile_subdomains,
             "attribution": a.tile_attribution, "crs": a.tile_crs.value, "max_zoom": a.tile_max_zoom}
    return {"name": site.site.name, "timezone": site.site.timezone, "tile_url": a.tile_url, "map": tiles,
            "auth": api.auth, "scope": p.org, "role": p.role.value, "version": __version__}


# -- orgs --------------------------------------------------------------------------------------------
def org_out(o, p: Principal) -> OrgOut:
    # the parent is named only when the caller sees it too
    return OrgOut(path=o.path, code=o.code, name=o.name, parent=o.parent if p.sees(o.parent) else None)


@router.get("/v1/orgs", response_model=Page[OrgOut], tags=["orgs"], responses=READ)
async def list_orgs(p: Who, api: Api, request: Request, limit: Limit = 100, cursor: Cursor = None,
                    org: OrgQ = None) -> Page[OrgOut]:
    scope = api.guard.org_filter(request, p, org)
    page, nxt = api.paged((o for o in api.site.orgs if scope is None or org_within(o.path, scope)), lambda o: o.path,
                          limit, cursor)
    return Page[OrgOut](items=[org_out(o, p) for o in page], next_cursor=nxt)


@router.get("/v1/orgs/tree", response_model=OrgTree, tags=["orgs"], responses=READ)
async def org_tree(p: Who, api: Api) -> OrgTree:
    visible = sorted((o for o in api.site.orgs if p.sees(o.path)), key=lambda o: o.path)
    nodes = {o.path: OrgNode(path=o.path, code=o.code, name=o.name) for o in visible}
    roots = []
    for o in visible:
        if o.parent in nodes:
            nodes[o.parent].children.append(nodes[o.path])
        else:
            roots.append(nodes[o.path])
    return OrgTree(roots=roots)


@router.get("/v1/orgs/{org_path:path}", response_model=OrgOut, tags=["orgs"], responses=ONE)
async def get_org(org_path: str, p: Who, api: Api, request: Request) -> OrgOut:
    try:
        check_org_path(org_path)
    except ValueError:
        raise HTTPException(404, NO_ORG) from None
    return org_out(api.org_or_404(request, p, org_path), p)


# -- buildings ---------------------------------------------------------------------------------------
def building_out(api: ApiState, b) -> BuildingOut:
    return BuildingOut(id=b.id, org=b.org, name=b.name, floor_area_m2=b.floor_area_m2, occupants=b.occupants,
                       meters=[m.id for m in api.site.meters if m.building == b.id])


@router.get("/v1/buildings", response_model=Page[BuildingOut], tags=["buildings"], responses=READ)
async def list_buildings(p: Who, api: Api, request: Request, org: OrgQ = None, limit: Limit = 100,
                         cursor: Cursor = None) -> Page[BuildingOut]:
    scope = api.guard.org_filter(request, p, org)
    page, nxt = api.paged((b for b in api.site.buildings if scope is None or org_within(b.org, scope)), lambda b: b.id,
                          limit, cursor)
    return Page[BuildingOut](items=[building_out(api, b) for b in page], next_cursor=nxt)


@router.get("/v1/buildings/{building_id}", response_model=BuildingOut, tags=["buildings"], responses=ONE)
async def get_building(building_id: str, p: Who, api: Api, request: Request) -> BuildingOut:
    return building_out(api, api.building_or_404(request, p, building_id))
