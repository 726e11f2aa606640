"""The gRPC server of one process: a `grpc.aio` server on that process's own event loop, serving
the Open Inference Protocol (app.grpc.servicer), standard health checking (app.grpc.health) and
server reflection, observed by app.grpc.interceptor.

Started by the app's lifespan, so under `modelport serve` each gunicorn worker starts its own after
it has been forked: the master creates no gRPC object (a gRPC server or channel does not survive
a fork). The workers all listen on the one port: gRPC sets SO_REUSEPORT (its default on Linux,
set here explicitly), and the kernel spreads new connections over them. A connection stays with
the worker that accepted it, as an HTTP keep-alive connection does.
"""

import logging
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from app.access_log import ACCESS_LOG
from app.codecs.grpc.proto import grpc_predict_v2_pb2_grpc as pb_grpc
from app.config import Settings
from app.grpc.health import HealthServicer
from app.grpc.interceptor import ObservingInterceptor
from app.grpc.servicer import SERVICE, InferenceServicer, method
from app.serving.dataplane import DataPlane

logger = logging.getLogger("modelport")

# The calls that need the API key when one is set: inference, and the repository's writes.
GUARDED = {method("ModelInfer"), method("RepositoryModelLoad"), method("RepositoryModelUnload")}


@dataclass(frozen=True)
class GrpcServer:
    server: Any  # grpc.aio.Server
    address: str
    port: int  # the port bound (the one asked for, or the one the system chose for port 0)

    async def stop(self, grace: float | None) -> None:
        """Refuse new calls at once; let calls in flight finish for up to `grace` seconds (None:
        none), then cancel them."""
        await self.server.stop(grace)


def grpc_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def start_grpc(
    dataplane: DataPlane, settings: Settings, *, address: str | None = None
) -> GrpcServer:
    """Start serving on `address` (default: the HTTP host and MODELPORT_GRPC_PORT). Must be
    called on the event loop that will serve the calls."""
    address = address or grpc_address(settings.host, settings.grpc_port)
    limit = settings.grpc_max_message_bytes or settings.max_body_bytes
    server = grpc.aio.server(
        interceptors=[
            ObservingInterceptor(
                access_log=ACCESS_LOG if settings.access_log else None,
                api_key=settings.api_key,
                guarded=GUARDED,
            )
        ],
        options=[
            # Larger messages are refused by gRPC itself with RESOURCE_EXHAUSTED, from the
            # message's length prefix, before the body is read.
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", limit),
            ("grpc.so_reuseport", 1),
        ],
    )
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(
        InferenceServicer(dataplane, settings), server
    )
    health_pb2_grpc.add_HealthServicer_to_server(HealthServicer(dataplane), server)
    reflection.enable_server_reflection(
        (SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    try:
        port = server.add_insecure_port(address)
    except RuntimeError as exc:  # gRPC's "Failed to bind": say which address
        raise RuntimeError(f"gRPC cannot listen on {address}: {exc}") from exc
    await server.start()
    logger.info("gRPC Open Inference Protocol on %s", address)
    return GrpcServer(server=server, address=address, port=port)
