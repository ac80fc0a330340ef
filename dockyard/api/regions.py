"""/v1/regions: the configured regions, so clients can resolve a registry's region_id."""

from __future__ import annotations

from fastapi import APIRouter

from dockyard.api.deps import ProjectDep, ServicesDep
from dockyard.api.schemas import ErrorBody, RegionList, RegionOut

router = APIRouter(prefix="/v1/regions", tags=["regions"])


@router.get("", responses={401: {"model": ErrorBody}})
async def list_regions(project: ProjectDep, services: ServicesDep) -> RegionList:
    return RegionList(
        regions=[
            RegionOut(id=region.region_id, status=region.status, name=region.name, slug=region.slug)
            for region in services.settings.effective_regions
        ]
    )
