"""The data plane: the one protocol-neutral path from a request to its reply.

Every surface (JSON rows, file uploads, forms, streams, explanations, the Open Inference
Protocol over REST and gRPC) calls this object, and owns only its wire format and its error
envelope:

    resolve the version (pinned, default, canary session)  ->  `resolve` / `model`
    refuse what cannot be served in time (429)              ->  `admit`
    decode and validate (the surface's codec)               ->  `infer(decode=...)`
    batch, predict, check                                    ->  `predict_rows`
    log a sample of inputs and outputs (off the request)     ->  `payload_log`
    encode (the surface's codec)                             ->  `infer(encode=...)`
    explain (attribute each output to the features)         ->  `explain`

Decoders and encoders come from the surface (app.codecs): the data plane decides where they
run (on the event loop when tiny, else in a thread) and runs the rows through the version's
runner (its micro-batcher), so every surface gets the same validation, batching and checks.
A stream (a body of any length) takes the same path chunk by chunk: `stream`.
A surface passes its protocol's deadline as a `Deadline` (app.serving.deadline) and, where it
can tell, a `gone()` saying whether its client has disconnected.
Free of FastAPI, like everything below the HTTP layer.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, Generic, TypeVar

import numpy as np

from app.errors import DeadlineExceeded, InferenceError
from app.metrics import TURN_METRICS
from app.serving.deadline import Deadline, tightened
from app.serving.explainers import Attribution, Explainer, built_explainer, explainer_of
from app.serving.model import LoadedModel, ModelOutput, Transport, run
from app.serving.offload import REPLY_BYTES_PER_ROW, bounded, in_thread, offload
from app.serving.payload_log import PayloadLog
from app.serving.registry import ModelRegistry
from app.serving.repository import InProcessRepository, Repository
from app.serving.schema import Rows, too_many_rows
from app.serving.streaming import StreamCodec, stream_answers
from app.serving.traffic import Routed, route
from app.tracing import TRACING, RequestTrace

Context = TypeVar("Context")
Reply = TypeVar("Reply")
Piece = TypeVar("Piece")


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
    check → encode. Holds the registry, and the repository that loads and unloads models (by
    default in this process); one per app, shared by every surface in the worker."""

    def __init__(
        self,
        registry: ModelRegistry,
        repository: Repository | None = None,
        payload_log: PayloadLog | None = None,
    ) -> None:
        self.registry = registry
        self.repository: Repository = repository or InProcessRepository(registry)
        # None when payload logging is off (rate 0): the hot path then pays one test.
        self.payload_log = payload_log
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
        transport: Transport = "http",
        deadline: Deadline | None = None,
        gone: Callable[[], bool] | None = None,
        refusable: bool = True,
    ) -> ModelOutput:
        """Validated rows through the version's runner (batched with concurrent requests from
        every surface and protocol), each request's output checked (finite, one answer per
        row). `alone`: no other request is in flight in this worker. `deadline`:
        `DeadlineExceeded` once it passes (rows still queued never reach the estimator);
        `gone()`: whether the client has disconnected (its queued rows are then dropped).
        `refusable=False`: never refused by admission control (`Overloaded`)."""
        if TRACING.on:
            trace = TRACING.request(model.name, model.version)
            if trace is not None:
                return await self._predict_traced(
                    model,
                    rows,
                    alone=alone,
                    transport=transport,
                    deadline=deadline,
                    gone=gone,
                    trace=trace,
                    refusable=refusable,
                )
        return await self._predict(
            model,
            rows,
            alone=alone,
            transport=transport,
            deadline=deadline,
            gone=gone,
            refusable=refusable,
        )

    async def _predict(
        self,
        model: LoadedModel,
        rows: Rows,
        *,
        alone: bool,
        transport: Transport,
        deadline: Deadline | None,
        gone: Callable[[], bool] | None,
        refusable: bool = True,
    ) -> ModelOutput:
        if model.runner is None:  # loaded without hooks: alone, in a thread
            return await bounded(in_thread(run, model, rows), deadline)
        return await model.runner.predict(
            rows,
            alone=alone,
            deadline=deadline,
            gone=gone,
            transport=transport,
            refusable=refusable,
        )

    async def infer(
        self,
        model: LoadedModel,
        decode: Callable[[LoadedModel], Decoded[Context]],
        encode: Callable[[LoadedModel, ModelOutput, Context], Reply],
        *,
        work: int,
        transport: Transport = "http",
        deadline: Deadline | None = None,
        gone: Callable[[], bool] | None = None,
    ) -> Reply:
        """One request end to end. `work` is the request's size in bytes (or `BLOCKING` for a
        decoder that may block on I/O): small requests are decoded and encoded on the event
        loop, which is cheaper than a thread hop; large ones in a thread. `transport`: the
        protocol it came by (gRPC or HTTP).

        `deadline` bounds all of it: no reply is returned after it (`DeadlineExceeded`, 504);
        the body's own timeout (`Decoded.timeout`) may tighten it. `gone()` says whether the
        client has disconnected."""
        self.in_flight += 1
        try:
            if TRACING.on:  # all that tracing costs a request when it is off
                trace = TRACING.request(model.name, model.version)
                if trace is not None:
                    return await self._infer_traced(
                        model,
                        decode,
                        encode,
                        work=work,
                        transport=transport,
                        deadline=deadline,
                        gone=gone,
                        trace=trace,
                    )
            decoded = await offload(decode, model, work=work, deadline=deadline)
            deadline = _deadline_after_decoding(deadline, decoded)
            output = await self._predict(
                model,
                decoded.rows,
                alone=self.in_flight == 1,
                transport=transport,
                deadline=deadline,
                gone=gone,
            )
            if self.payload_log is not None:
                self.payload_log.offer(model, decoded.rows, output)
            reply = await offload(
                encode,
                model,
                output,
                decoded.context,
                work=len(output) * REPLY_BYTES_PER_ROW,
                deadline=deadline,
            )
            _check_deadline(deadline, "as its reply was written")
            return reply
        except DeadlineExceeded:
            TURN_METRICS.inc(model.queue_metrics.expired)
            raise
        finally:
            self.in_flight -= 1

    # -- traced: the same steps, each in its span (app.tracing) ------------------------------------
    async def _infer_traced(
        self,
        model: LoadedModel,
        decode: Callable[[LoadedModel], Decoded[Context]],
        encode: Callable[[LoadedModel, ModelOutput, Context], Reply],
        *,
        work: int,
        transport: Transport,
        deadline: Deadline | None,
        gone: Callable[[], bool] | None,
        trace: RequestTrace,
    ) -> Reply:
        def traced_decode(model: LoadedModel) -> Decoded[Context]:
            with trace.step("decode") as step:
                decoded = decode(model)
                step.rows = len(decoded.rows)
                return decoded

        def traced_encode(model: LoadedModel, output: ModelOutput, context: Context) -> Reply:
            with trace.step("encode", rows=len(output)):
                return encode(model, output, context)

        decoded = await offload(traced_decode, model, work=work, deadline=deadline)
        deadline = _deadline_after_decoding(deadline, decoded)
        output = await self._predict_traced(
            model,
            decoded.rows,
            alone=self.in_flight == 1,
            transport=transport,
            deadline=deadline,
            gone=gone,
            trace=trace,
        )
        if self.payload_log is not None:
            self.payload_log.offer(model, decoded.rows, output)
        reply = await offload(
            traced_encode,
            model,
            output,
            decoded.context,
            work=len(output) * REPLY_BYTES_PER_ROW,
            deadline=deadline,
        )
        _check_deadline(deadline, "as its reply was written")
        return reply

    async def _predict_traced(
        self,
        model: LoadedModel,
        rows: Rows,
        *,
        alone: bool,
        transport: Transport,
        deadline: Deadline | None,
        gone: Callable[[], bool] | None,
        trace: RequestTrace,
        refusable: bool = True,
    ) -> ModelOutput:
        timing = trace.call()
        try:
            if model.runner is None:
                output = await bounded(in_thread(run, model, rows), deadline)
            else:
                output = await model.runner.predict(
                    rows,
                    alone=alone,
                    deadline=deadline,
                    gone=gone,
                    transport=transport,
                    timing=timing,
                    refusable=refusable,
                )
        except Exception as exc:
            trace.called(timing, len(rows), exc)
            raise
        trace.called(timing, len(rows))
        return output

    def stream(
        self,
        model: LoadedModel,
        pieces: AsyncIterator[Piece],
        codec: StreamCodec[Piece, Context, Reply],
        *,
        abort: bool = False,
    ) -> AsyncIterator[Reply]:
        """A stream end to end (app.serving.streaming): each piece decoded by the codec, its
        rows through `predict_rows` (batched with every other request), answered in order
        with a bounded number of chunks in flight, and a summary last. `abort`: stop at the
        first bad row instead of answering each in its place."""
        # A stream's pieces are never refused: one refusal would end a stream of millions of
        # rows; they wait their turn in the queue instead.
        predict = partial(self.predict_rows, refusable=False)
        return stream_answers(predict, model, pieces, codec, abort=abort)

    # -- explain -------------------------------------------------------------------------------
    async def explain(
        self,
        model: LoadedModel,
        decode: Callable[[LoadedModel], Decoded[int | None]],
        encode: Callable[[LoadedModel, ModelOutput, Explained], Reply],
        *,
        max_rows: int,
    ) -> Reply:
        """One explanation request: the rows validated as for a prediction (the context is the
        index of the class named in the request, if any), predicted through the same runner and
        checks, then each row's output split over the features by the version's explainer (in
        a thread: exact methods cost milliseconds). At most `max_rows` rows, or fewer where the
        explainer caps them."""
        explainer = built_explainer(model)
        if explainer is None:  # the version's first explanation in this process: build it
            explainer = await in_thread(explainer_of, model)
        decoded = await offload(decode, model, work=0)
        rows = decoded.rows
        limit = min(max_rows, explainer.max_rows or max_rows)
        if len(rows) > limit:
            raise too_many_rows(limit, ["instances"])
        output = await self.predict_rows(model, rows)
        classes = explained_classes(model, output, decoded.context)
        attribution = await in_thread(explainer.explain, rows, classes)
        if not (
            np.isfinite(attribution.base).all() and np.isfinite(attribution.contributions).all()
        ):
            # Checked outputs are finite, so this is the explainer's fault, never the client's.
            raise InferenceError(f"Model {model.name} v{model.version}: explanation not finite")
        return encode(model, output, Explained(explainer, attribution, classes))


def _deadline_after_decoding(deadline: Deadline | None, decoded: Decoded[Any]) -> Deadline | None:
    """The request's deadline tightened by its body's own timeout; `DeadlineExceeded` if it
    has already passed, before the rows are queued."""
    if decoded.timeout is not None:
        deadline = tightened(deadline, decoded.timeout)
    _check_deadline(deadline, "before its rows were predicted")
    return deadline


def _check_deadline(deadline: Deadline | None, when: str) -> None:
    if deadline is not None and deadline.expired():
        raise DeadlineExceeded(
            f"The request's deadline passed after {deadline.elapsed():.3f} s, {when}"
        )


@dataclass(frozen=True)
class Explained:
    """What explained a request's rows and how: per row, the base value and contributions of
    the output `explainer.output` for class `classes[i]` (an index into `classes_`; None for
    regressors)."""

    explainer: Explainer
    attribution: Attribution
    classes: np.ndarray[Any, Any] | None


def explained_classes(
    model: LoadedModel, output: ModelOutput, requested: int | None
) -> np.ndarray[Any, Any] | None:
    """The class each row's explanation is for: the requested one, else the predicted one."""
    if model.card.task != "classification":
        return None
    if requested is not None:
        return np.full(len(output), requested, dtype=np.intp)
    if output.class_indices is not None:
        return np.asarray(output.class_indices, dtype=np.intp)
    index = {key: position for position, key in enumerate(model.class_keys)}
    return np.array([index[str(label)] for label in output.predictions.tolist()], dtype=np.intp)
