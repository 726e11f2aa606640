"""Standard gRPC health checking (`grpc.health.v1.Health`), for Kubernetes' gRPC probes and
`grpc_health_probe`, answered from the data plane's state at the time of each check:

- `""` (the server) and `inference.GRPCInferenceService`: SERVING when every model in the store
  loaded (REST's /readyz), NOT_SERVING otherwise;
- a model's name: SERVING when its default version is loaded, NOT_SERVING when it was refused;
- any other name: NOT_FOUND, as the health protocol asks.
"""

import asyncio
from typing import Any

from grpc_health.v1 import health_pb2

from app.errors import ModelNotFound, ModelUnavailable
from app.grpc.servicer import SERVICE
from app.serving.dataplane import DataPlane

SERVING: int = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING: int = health_pb2.HealthCheckResponse.NOT_SERVING
# How often a Watch call looks again (the state changes only when models load or are refused).
WATCH_INTERVAL = 1.0


class HealthServicer:
    """Registered with grpc_health's generated `add_HealthServicer_to_server`."""

    def __init__(self, dataplane: DataPlane) -> None:
        self.dataplane = dataplane

    def status(self, service: str) -> int:
        if service in ("", SERVICE):
            return SERVING if self.dataplane.ready else NOT_SERVING
        try:
            self.dataplane.model(service)
        except ModelUnavailable:
            return NOT_SERVING
        except ModelNotFound as exc:
            raise ModelNotFound(f"No service or model named {service[:100]!r}") from exc
        return SERVING

    async def Check(self, request: Any, context: Any) -> Any:
        return health_pb2.HealthCheckResponse(status=self.status(request.service))

    async def Watch(self, request: Any, context: Any) -> None:
        """The status now, then each change, for as long as the client listens (an unknown
        name is SERVICE_UNKNOWN here, as the protocol asks, since it may appear later)."""
        last = None
        while True:
            try:
                status = self.status(request.service)
            except ModelNotFound:
                status = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
            if status != last:
                await context.write(health_pb2.HealthCheckResponse(status=status))
                last = status
            await asyncio.sleep(WATCH_INTERVAL)
