"""The Open Inference Protocol's `GRPCInferenceService`: each RPC in a few lines over the one data
plane (app.serving.dataplane), which REST's routes call too, so a gRPC call validates, batches and
predicts exactly as a REST request does, in the same micro-batches.

Unpinned calls go to the model's default version (gRPC clients carry no session cookie, so the
canary split does not apply, as on REST v2). Errors are raised as `ServiceError`s and answered by
the interceptor (app.grpc.interceptor) as gRPC statuses.
"""

from typing import Any

from app.codecs.grpc.infer import infer_reply, infer_request
from app.codecs.grpc.metadata import model_metadata_response, server_metadata_response
from app.codecs.grpc.proto import grpc_predict_v2_pb2 as pb
from app.config import Settings
from app.errors import InvalidInput, ModelNotFound, ModelUnavailable
from app.serving.dataplane import DataPlane
from app.serving.deadline import Deadline
from app.serving.model import LoadedModel
from app.serving.repository import authorize_write

SERVICE = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name


def method(name: str) -> str:
    """A method's full name, as gRPC routes it and as metrics and logs label it."""
    return f"/{SERVICE}/{name}"


def parse_version(text: str) -> int | None:
    """A request's model version: empty for the default one, else a positive integer."""
    if not text:
        return None
    if not text.isascii() or not text.isdigit() or int(text) < 1:
        raise InvalidInput(
            f"model version {text[:40]!r} is not a positive integer (1, 2, ...); leave it "
            "empty for the model's default version"
        )
    return int(text)


def call_deadline(remaining: float | None, cap: float) -> Deadline | None:
    """The call's deadline as the data plane takes it: the client's (gRPC's `grpc-timeout`,
    `remaining` seconds from now) capped by MODELPORT_REQUEST_TIMEOUT, which is also the
    deadline of a call that sets none (0: no default and no cap), as over HTTP."""
    seconds = cap
    if remaining is not None:
        # Already past: the smallest positive deadline, answered DEADLINE_EXCEEDED.
        seconds = min(max(remaining, 1e-9), cap) if cap > 0 else max(remaining, 1e-9)
    return Deadline.after(seconds) if seconds else None


class InferenceServicer:
    """One per worker, holding the worker's data plane. Registered with the generated
    `add_GRPCInferenceServiceServicer_to_server`, which looks the methods up by name."""

    def __init__(self, dataplane: DataPlane, settings: Settings) -> None:
        self.dataplane = dataplane
        self.settings = settings

    def _model(self, name: str, version: str) -> LoadedModel:
        return self.dataplane.model(name, parse_version(version))

    async def ServerLive(self, request: Any, context: Any) -> Any:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: Any, context: Any) -> Any:
        return pb.ServerReadyResponse(ready=self.dataplane.ready)

    async def ModelReady(self, request: Any, context: Any) -> Any:
        """Ready when the version loaded; not ready when it was refused; NOT_FOUND when the
        store has no such model or version."""
        try:
            self._model(request.name, request.version)
        except ModelUnavailable:
            return pb.ModelReadyResponse(ready=False)
        return pb.ModelReadyResponse(ready=True)

    async def ServerMetadata(self, request: Any, context: Any) -> Any:
        return server_metadata_response()

    async def ModelMetadata(self, request: Any, context: Any) -> Any:
        model = self._model(request.name, request.version)
        return model_metadata_response(model, self.dataplane.versions(model.name))

    async def ModelInfer(self, request: Any, context: Any) -> Any:
        model = self._model(request.model_name, request.model_version)
        deadline = call_deadline(context.time_remaining(), self.settings.request_timeout)
        # Refused at once (RESOURCE_EXHAUSTED) when the version cannot serve it in time.
        self.dataplane.admit(model, deadline)
        # The message's size stands for the work of decoding it, as a REST body's length does.
        return await self.dataplane.infer(
            model,
            infer_request(request),
            infer_reply,
            work=request.ByteSize(),
            transport="grpc",
            deadline=deadline,
        )

    # The model repository extension (Triton's RPCs), over the same repository as REST's
    # /v2/repository routes (app.serving.repository): the master loads, the workers share.
    async def RepositoryIndex(self, request: Any, context: Any) -> Any:
        self._one_repository(request.repository_name)
        rows = self.dataplane.repository.index(ready_only=request.ready)
        return pb.RepositoryIndexResponse(
            models=[
                pb.RepositoryIndexResponse.ModelIndex(
                    name=row.name,
                    version="" if row.version is None else str(row.version),
                    state=row.state,
                    reason=row.reason,
                )
                for row in rows
            ]
        )

    async def RepositoryModelLoad(self, request: Any, context: Any) -> Any:
        self._authorize_write(request.repository_name, context)
        await self.dataplane.repository.load(request.model_name)
        return pb.RepositoryModelLoadResponse()

    async def RepositoryModelUnload(self, request: Any, context: Any) -> Any:
        self._authorize_write(request.repository_name, context)
        await self.dataplane.repository.unload(request.model_name)
        return pb.RepositoryModelUnloadResponse()

    def _one_repository(self, name: str) -> None:
        if name:
            raise ModelNotFound(
                f"Repository {name[:80]!r} not found: this server has one, named by the empty string"
            )

    def _authorize_write(self, repository: str, context: Any) -> None:
        """The REST routes' rule (app.serving.repository.authorize_write): the key, if one is
        set (the interceptor has checked it already), and writes turned on."""
        self._one_repository(repository)
        metadata = dict(context.invocation_metadata() or ())
        offered = metadata.get("x-api-key")
        authorize_write(self.settings, offered if isinstance(offered, str) else None)
