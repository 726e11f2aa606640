"""The data plane: the one protocol-neutral path from a request to its reply.

Every surface (JSON rows, file uploads, forms, the Open Inference Protocol; gRPC, streams and
explanations next) calls this object, and owns only its wire format and its error envelope:

    resolve the version (pinned, default, canary session)  ->  `resolve` / `model`
    refuse what cannot be served in time (429)              ->  `admit`
    decode and validate (the surface's codec)               ->  `infer(decode=...)`
    batch, predict, check                                    ->  `predict_rows`
    encode (the surface's codec)                             ->  `infer(encode=...)`

Decoders and encoders come from the surface (app.codecs): the data plane decides where they
run (on the event loop when tiny, else in a thread) and runs the rows through the version's
runner (its micro-batcher), so every surface gets the same validation, batching and checks.
A surface passes its protocol's deadline as a `Deadline` (app.serving.deadline) and, where it
can tell, a `gone()` saying whether its client has disconnected.
Free of FastAPI, like everything below the HTTP layer.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from app.errors import DeadlineExceeded
from app.metrics import TURN_METRICS
from app.serving.deadline import Deadline, tightened
from app.serving.model import LoadedModel, ModelOutput, run
from app.serving.offload import REPLY_BYTES_PER_ROW, bounded, in_thread, offload
from app.serving.registry import ModelRegistry
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
    # Seconds the request's own body allows it (the Open Inference Protocol's `timeout`
    # parameter), counted from its arrival: tightens its deadline, never extends it.
    timeout: float | None = None


class DataPlane:
    """The one entry every surface calls: resolve → decode → validate → batch → predict →
    check → encode. Holds the registry; one per app, shared by every surface in the worker."""

    def __init__(self, registry: ModelRegistry) -> None:
        self.registry = registry
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

    # -- admit ---------------------------------------------------------------------------------
    def admit(self, model: LoadedModel, deadline: Deadline | None) -> None:
        """Refuse at once (`Overloaded`, 429) a request the version cannot take now: its queue
        is full, or the wait it predicts outlasts `deadline`. Call it before reading the body;
        `infer` checks again once the rows are known."""
        if model.runner is not None:
            model.runner.admit(0, deadline)

    # -- predict -------------------------------------------------------------------------------
    async def predict_rows(
        self,
        model: LoadedModel,
        rows: Rows,
        *,
        alone: bool = False,
        deadline: Deadline | None = None,
        gone: Callable[[], bool] | None = None,
    ) -> ModelOutput:
        """Validated rows through the version's runner (batched with concurrent requests from
        every surface), each request's output checked (finite, one answer per row). `alone`:
        no other request is in flight in this worker. `deadline`: `DeadlineExceeded` once it
        passes (rows still queued never reach the estimator); `gone()`: whether the client has
        disconnected (its queued rows are then dropped)."""
        if model.runner is None:  # loaded without hooks: alone, in a thread
            return await bounded(in_thread(run, model, rows), deadline)
        return await model.runner.predict(rows, alone=alone, deadline=deadline, gone=gone)

    async def infer(
        self,
        model: LoadedModel,
        decode: Callable[[LoadedModel], Decoded[Context]],
        encode: Callable[[LoadedModel, ModelOutput, Context], Reply],
        *,
        work: int,
        deadline: Deadline | None = None,
        gone: Callable[[], bool] | None = None,
    ) -> Reply:
        """One request end to end. `work` is the request's size in bytes (or `BLOCKING` for a
        decoder that may block on I/O): small requests are decoded and encoded on the event
        loop, which is cheaper than a thread hop; large ones in a thread.

        `deadline` bounds all of it: no reply is returned after it (`DeadlineExceeded`, 504);
        the body's own timeout (`Decoded.timeout`) may tighten it. `gone()` says whether the
        client has disconnected."""
        self.in_flight += 1
        try:
            decoded = await offload(decode, model, work=work, deadline=deadline)
            if decoded.timeout is not None:
                deadline = tightened(deadline, decoded.timeout)
            if deadline is not None and deadline.expired():
                raise DeadlineExceeded(
                    f"The request's deadline passed after {deadline.elapsed():.3f} s, "
                    "before its rows were predicted"
                )
            output = await self.predict_rows(
                model, decoded.rows, alone=self.in_flight == 1, deadline=deadline, gone=gone
            )
            reply = await offload(
                encode,
                model,
                output,
                decoded.context,
                work=len(output) * REPLY_BYTES_PER_ROW,
                deadline=deadline,
            )
            if deadline is not None and deadline.expired():
                raise DeadlineExceeded(
                    f"The request's deadline passed after {deadline.elapsed():.3f} s, "
                    "as its reply was written"
                )
            return reply
        except DeadlineExceeded:
            TURN_METRICS.inc(model.queue_metrics.expired)
            raise
        finally:
            self.in_flight -= 1
