from fastapi import APIRouter, Response

from app.errors import NotReady
from app.http import paths
from app.http.dependencies import RegistryDep
from app.metrics import render
from schemas.errors import ErrorResponse
from schemas.health import HealthStatus, ReadinessStatus

router = APIRouter(tags=["health"])


@router.get(paths.HEALTH)
async def liveness() -> HealthStatus:
    """Liveness: the process answers. Does no model work."""
    return HealthStatus()


@router.get(
    paths.READY,
    responses={
        503: {
            "model": ErrorResponse,
            "description": "Not ready: names what is unavailable.",
            "content": {
                "application/json": {
                    "example": {
                        "error": "NotReady",
                        "detail": {
                            "status": "not ready",
                            "models": 4,
                            "unavailable": {
                                "iris/2": "SHA-256 mismatch: card records 3f2a…, model.joblib is 9c41…"
                            },
                        },
                    }
                }
            },
        }
    },
)
async def readiness(registry: RegistryDep) -> ReadinessStatus:
    """Readiness: 200 when every model in the store loaded, else 503 naming what did not."""
    loaded = len(registry.loaded_models())
    if registry.ready:
        return ReadinessStatus(status="ready", models=loaded)
    problems = registry.problems or {"store": "no models in the store"}
    body = ReadinessStatus(status="not ready", models=loaded, unavailable=problems)
    raise NotReady(body.model_dump())


@router.get(
    paths.METRICS, response_class=Response, responses={200: {"content": {"text/plain": {}}}}
)
async def metrics() -> Response:
    """Prometheus metrics, aggregated across every gunicorn worker."""
    body, content_type = render()
    return Response(content=body, media_type=content_type)
