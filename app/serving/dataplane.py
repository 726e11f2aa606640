"""The data plane: the one protocol-neutral path from a request to its reply.

Every surface (JSON rows, file uploads, forms, the Open Inference Protocol; gRPC, streams and
explanations next) calls this object, and owns only its wire format and its error envelope:

    resolve the version (pinned, default, canary session)  ->  `resolve` / `model`
    decode and validate (the surface's codec)               ->  `infer(decode=...)`
    batch, predict, check                                    ->  `predict_rows`
    encode (the surface's codec)                             ->  `infer(encode=...)`

Decoders and encoders come from the surface (app.codecs): the data plane decides where they
run (on the event loop when tiny, else in a thread) and runs the rows through the version's
runner (its micro-batcher), so every surface gets the same validation, batching and checks.
Free of FastAPI, like everything below the HTTP layer.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from app.serving.model import LoadedModel, ModelOutput, run
from app.serving.offload import REPLY_BYTES_PER_ROW, in_thread, offload
from app.serving.registry import ModelRegistry
from app.serving.repository import InProcessRepository, Repository
from app.serving.schema import Rows
from app.serving.traffic import Routed, route

Context = TypeVar("Context")
Reply = TypeVar("Reply")


@dataclass(frozen=True)
class Decoded(Generic[Context]):
    """A request decoded by its surface: validated rows in feature order, and whatever else
    the surface's encoder needs to answer it (the uploaded table, the form's options, the v2
    request)."""

    rows: Rows
    context: Context


class DataPlane:
    """The one entry every surface calls: resolve → decode → validate → batch → predict →
    check → encode. Holds the registry, and the repository that loads and unloads models (by
    default in this process); one per app, shared by every surface in the worker."""

    def __init__(self, registry: ModelRegistry, repository: Repository | None = None) -> None:
        self.registry = registry
        self.repository: Repository = repository or InProcessRepository(registry)
        # Requests inside `infer` in this worker: with one, the worker is otherwise idle.
        self.in_flight = 0

    # -- resolve -------------------------------------------------------------------------------
    def resolve(self, name: str, version: int | None = None, session: str | None = None) -> Routed:
        """The version to serve: pinned, or chosen by the model's traffic split for `session`."""
        return route(self.registry, name, version, session)

    def model(self, name: str, version: int | None = None) -> LoadedModel:
        """A pinned version, or the default one (no canary split: for protocols that carry no
        session)."""
        return self.registry.get(name, version)

    def versions(self, name: str) -> list[int]:
        return sorted(self.registry.entry(name).versions)

    @property
    def ready(self) -> bool:
        return self.registry.ready

    # -- predict -------------------------------------------------------------------------------
    async def predict_rows(
        self, model: LoadedModel, rows: Rows, *, alone: bool = False
    ) -> ModelOutput:
        """Validated rows through the version's runner (batched with concurrent requests from
        every surface), each request's output checked (finite, one answer per row). `alone`:
        no other request is in flight in this worker."""
        if model.runner is None:  # loaded without hooks: alone, in a thread
            return await in_thread(run, model, rows)
        return await model.runner.predict(rows, alone=alone)

    async def infer(
        self,
        model: LoadedModel,
        decode: Callable[[LoadedModel], Decoded[Context]],
        encode: Callable[[LoadedModel, ModelOutput, Context], Reply],
        *,
        work: int,
    ) -> Reply:
        """One request end to end. `work` is the request's size in bytes (or `BLOCKING` for a
        decoder that may block on I/O): small requests are decoded and encoded on the event
        loop, which is cheaper than a thread hop; large ones in a thread."""
        self.in_flight += 1
        try:
            decoded = await offload(decode, model, work=work)
            output = await self.predict_rows(model, decoded.rows, alone=self.in_flight == 1)
            return await offload(
                encode, model, output, decoded.context, work=len(output) * REPLY_BYTES_PER_ROW
            )
        finally:
            self.in_flight -= 1
