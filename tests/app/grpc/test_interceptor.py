"""The interceptor (app.grpc.interceptor) around handlers that fail as no servicer of ours should:
a crash is INTERNAL with no detail of it, a handler's own abort keeps its code, and both are
counted and logged like any call. Real gRPC server and channel on 127.0.0.1."""

import asyncio
import io
import json
from typing import Any

import grpc
import pytest
from prometheus_client import REGISTRY

from app.access_log import AccessLog
from app.grpc.interceptor import ObservingInterceptor
from app.metrics import TURN_METRICS


async def _crashes(request: bytes, context: Any) -> bytes:
    raise ValueError("secret internals")


async def _aborts(request: bytes, context: Any) -> bytes:
    await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "the handler's own reason")
    return b""


async def _calls(log: AccessLog) -> list[tuple[Any, str]]:
    handlers = {
        "Crash": grpc.unary_unary_rpc_method_handler(_crashes),
        "Abort": grpc.unary_unary_rpc_method_handler(_aborts),
    }
    server = grpc.aio.server(
        interceptors=[ObservingInterceptor(access_log=log, api_key=None, guarded=set())]
    )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("test.Odd", handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    found = []
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            for name in ("Crash", "Abort"):
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await channel.unary_unary(f"/test.Odd/{name}")(b"")
                found.append((caught.value.code(), caught.value.details()))
    finally:
        await server.stop(None)
    return found


def test_crashes_and_aborts_are_answered_counted_and_logged() -> None:
    log = AccessLog()
    log.stream = io.StringIO()

    def count(method: str, status: str) -> float:
        labels = {"route": f"/test.Odd/{method}", "method": "GRPC", "status": status}
        return REGISTRY.get_sample_value("modelport_requests_total", labels) or 0.0

    before = count("Crash", "500"), count("Abort", "400")
    crashed, aborted = asyncio.run(_calls(log))
    TURN_METRICS.flush()
    log.flush()

    assert crashed == (grpc.StatusCode.INTERNAL, "internal server error")
    assert aborted == (grpc.StatusCode.FAILED_PRECONDITION, "the handler's own reason")
    assert (count("Crash", "500"), count("Abort", "400")) == (before[0] + 1, before[1] + 1)
    assert log.stream is not None
    lines = [json.loads(line) for line in log.stream.getvalue().splitlines()]
    assert [(line["route"], line["grpc_status"]) for line in lines] == [
        ("/test.Odd/Crash", "INTERNAL"),
        ("/test.Odd/Abort", "FAILED_PRECONDITION"),
    ]
