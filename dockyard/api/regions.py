"""/v1/regions: the configured regions, so clients can resolve a registry's region_id."""

from __future__ import annotations

from fastapi import APIRouter, Response

from dockyard.api.deps import ProjectDep, ServicesDep
from dockyard.api.schemas import (
    KEY_REFUSALS,
    THROTTLED,
    ErrorBody,
    RegionList,
    RegionOut,
    json_response,
)

router = APIRouter(prefix="/v1/regions", tags=["regions"])


@router.get(
    "",
    response_model=RegionList,
    responses={
        401: {"model": ErrorBody, "description": "No, a wrong, a revoked or an expired API token"},
        **KEY_REFUSALS,
        **THROTTLED,
    },
)
async def list_regions(project: ProjectDep, services: ServicesDep) -> Response:
    return json_response(
        RegionList(
            regions=[
                RegionOut(
                    id=region.region_id, status=region.status, name=region.name, slug=region.slug
                )
                for region in services.settings.effective_regions
            ]
        )
    )
