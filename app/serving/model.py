"""A loaded model version and the one call into its estimator: rows in, checked output out.

Every surface reaches the estimator through `call_estimator` (alone, or in a micro-batch) and
judges its share of the output with `check_output`, so prediction behaviour and metrics are the
same everywhere. Free of FastAPI.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal, Protocol

import numpy as np
from sklearn.ensemble import RandomForestClassifier
from sklearn.pipeline import Pipeline
from sklearn.tree import DecisionTreeClassifier

from app.errors import InferenceError, InvalidInput
from app.metrics import BATCH_SIZE, PREDICTED_ROWS, PREDICTIONS, TURN_METRICS
from app.serving.admission import QueueMetrics
from app.serving.backends import Evaluator
from app.serving.deadline import Deadline
from app.serving.schema import InputSchema, Row, Rows
from app.tracing import CallTiming
from schemas.cards import ModelCard
from schemas.predict import PredictionResponse


def labels_follow_probabilities(estimator: Any) -> bool:
    """Whether `predict` is by definition `classes_[argmax(predict_proba)]` (trees and forests:
    their `predict` computes exactly that), so one `predict_proba` pass answers both. Other
    classifiers (e.g. SVC with Platt scaling) may disagree with their own probabilities."""
    final = estimator[-1] if isinstance(estimator, Pipeline) else estimator
    # The inherited methods themselves (shared by ExtraTrees*, ExtraTree*): a subclass that
    # overrides `predict` keeps its own.
    return getattr(type(final), "predict", None) in _ARGMAX_PREDICTS


_ARGMAX_PREDICTS = (RandomForestClassifier.predict, DecisionTreeClassifier.predict)


@dataclass(frozen=True)
class Backend:
    """What evaluates a version's rows: a fast evaluator proven equal to scikit-learn bit for bit
    at load (app.serving.backends), or scikit-learn itself, with the reason."""

    name: str  # "numpy-linear", "numpy-trees" or "sklearn"
    evaluator: Evaluator | None = None
    reason: str | None = None  # why scikit-learn serves this version, when it does


SKLEARN = Backend("sklearn", reason="not chosen at load")


# The protocol a request came by: batches may mix them, and the metrics say when they do.
Transport = Literal["http", "grpc"]


class Runner(Protocol):
    """How a version's rows reach its estimator in this process: alone, or in micro-batches
    with other requests' rows (app.serving.batching). Answers each request's checked output,
    `DeadlineExceeded` once `deadline` passes, `ClientGone` when `gone()` says the client left
    while the rows waited; `admit` refuses (`Overloaded`) a request that cannot be served in
    time, before its body is read (`rows` 0) or with its rows."""

    async def predict(
        self,
        rows: Rows,
        *,
        alone: bool = False,
        deadline: Deadline | None = None,
        gone: Callable[[], bool] | None = None,
        transport: Transport = "http",
        timing: CallTiming | None = None,
        refusable: bool = True,
    ) -> ModelOutput: ...

    def admit(self, rows: int, deadline: Deadline | None) -> None: ...


# Identity: a loaded version is one object, never compared. Not frozen for two fields set by
# the registry's load hooks, before the version serves: `runner` (batching is a hook, so this
# module never imports the batcher) and `backend`; everything else is set once, at load.
@dataclass(eq=False)
class LoadedModel:
    """One model version in memory: its card, the fitted estimator and its input schema."""

    card: ModelCard
    estimator: Any
    inputs: InputSchema = field(repr=False)
    example_response: dict[str, Any] | None = field(default=None, repr=False)
    runner: Runner | None = field(default=None, repr=False)
    backend: Backend = field(default=SKLEARN, repr=False)
    # Served despite a scikit-learn version mismatch (MODELPORT_VERSION_MISMATCH=warn): why.
    version_mismatch: str | None = field(default=None, repr=False)
    load_warnings: tuple[str, ...] = field(default=(), repr=False)  # raised while loading

    @property
    def name(self) -> str:
        return self.card.name

    @property
    def version(self) -> int:
        return self.card.version

    @cached_property
    def has_probabilities(self) -> bool:
        return self.card.task == "classification" and hasattr(self.estimator, "predict_proba")

    @cached_property
    def labels_from_probabilities(self) -> bool:
        return self.has_probabilities and labels_follow_probabilities(self.estimator)

    @cached_property
    def metrics(self) -> tuple[Any, Any, Any]:
        """This version's (predictions, predicted rows, batch size) metrics, looked up once."""
        labels = (self.name, str(self.version))
        return (
            PREDICTIONS.labels(*labels),
            PREDICTED_ROWS.labels(*labels),
            BATCH_SIZE.labels(*labels),
        )

    @cached_property
    def queue_metrics(self) -> QueueMetrics:
        """This version's admission and deadline metrics."""
        return QueueMetrics(self.name, self.version)

    @cached_property
    def class_keys(self) -> list[str]:
        """Class labels as the string keys of each prediction's probabilities."""
        return [str(label) for label in np.asarray(self.estimator.classes_).tolist()]


@dataclass(frozen=True)
class ModelOutput:
    """What the estimator answered for n rows, checked: finite, one prediction per row."""

    predictions: np.ndarray[Any, Any]  # labels (classification) or float64 values, shape (n,)
    probabilities: np.ndarray[Any, Any] | None  # float64, shape (n, n_classes), in classes_ order
    # When each label was taken from the estimator's classes_ by index: `classes`, and each
    # row's index into it (the reply then writes each class's text once).
    classes: np.ndarray[Any, Any] | None = None
    class_indices: np.ndarray[Any, Any] | None = None

    def __len__(self) -> int:
        return len(self.predictions)

    def slice(self, start: int, stop: int) -> ModelOutput:
        return ModelOutput(
            self.predictions[start:stop],
            None if self.probabilities is None else self.probabilities[start:stop],
            self.classes,
            None if self.class_indices is None else self.class_indices[start:stop],
        )


def call_estimator(model: LoadedModel, rows: Rows, *, observe: bool = True) -> ModelOutput:
    """The one place rows meet the estimator: one call for any number of rows (a request's, or a
    micro-batch of several requests'). CPU-bound: call it off the event loop. The output is not
    yet checked: `check_output` judges each request's share of it.

    `observe=False` keeps a call out of the metrics (the registry's load-time self-check)."""
    if observe:
        TURN_METRICS.observe(model.metrics[2], len(rows))
    features = model.inputs.to_model_input(rows)
    estimator = model.estimator
    predict, predict_proba = _evaluation(model, len(rows))
    where = f"Model {model.name} v{model.version}"
    classes = indices = None
    try:
        # Overflow on extreme (but finite) inputs is judged per row by check_output, not here.
        with np.errstate(all="ignore"):
            if model.labels_from_probabilities:
                proba = predict_proba(features)
                classes, indices = np.asarray(estimator.classes_), np.argmax(proba, axis=1)
                raw = classes.take(indices, axis=0)
            else:
                raw = predict(features)
                proba = predict_proba(features) if model.has_probabilities else None
    except Exception as exc:
        raise InferenceError(f"{where} failed: {type(exc).__name__}: {exc}"[:500]) from exc
    predictions = np.asarray(raw)
    probabilities = None if proba is None else np.asarray(proba, dtype=np.float64)
    if predictions.shape != (len(rows),) or (
        probabilities is not None and probabilities.shape != (len(rows), len(model.class_keys))
    ):
        raise InferenceError(f"{where} answered shape {predictions.shape} for {len(rows)} rows")
    if model.card.task == "regression":
        predictions = predictions.astype(np.float64)
    return ModelOutput(predictions, probabilities, classes, indices)


def _evaluation(model: LoadedModel, rows: int) -> tuple[Any, Any]:
    """(predict, predict_proba) for `rows` rows: the version's fast evaluator, unless it has
    none or the batch is past the size where scikit-learn is faster."""
    evaluator = model.backend.evaluator
    if evaluator is not None and (evaluator.max_rows is None or rows <= evaluator.max_rows):
        return evaluator.predict, evaluator.predict_proba
    estimator = model.estimator
    return estimator.predict, getattr(estimator, "predict_proba", None)


def check_output(model: LoadedModel, output: ModelOutput, *, observe: bool = True) -> ModelOutput:
    """One request's share of an estimator call, refused (422 naming the rows, counted from the
    request's first row) where the model gave no finite answer."""
    if observe:
        predictions, rows, _ = model.metrics
        TURN_METRICS.inc(predictions)
        TURN_METRICS.inc(rows, len(output))
    if model.card.task == "regression":
        finite = np.isfinite(output.predictions)
    elif output.probabilities is not None:
        finite = np.isfinite(output.probabilities).all(axis=1)
    else:
        return output
    if not finite.all():
        # Rows passed validation, so a non-finite answer comes from values the model cannot
        # handle (e.g. 1e308 overflowing a linear model): the client's to fix, hence a 4xx.
        raise InvalidInput(
            [
                {
                    "loc": ["instances", int(index)],
                    "msg": _NON_FINITE_OUTPUT,
                    "type": "non_finite_output",
                }
                for index in np.flatnonzero(~finite)[:10]
            ]
        )
    return output


def run(model: LoadedModel, rows: Rows, *, observe: bool = True) -> ModelOutput:
    """One request's rows through the estimator on their own (no batching), checked."""
    return check_output(model, call_estimator(model, rows, observe=observe), observe=observe)


_NON_FINITE_OUTPUT = "The model gives no finite answer for this row: are its values far outside the range seen in training?"


def prediction_document(model: LoadedModel, output: ModelOutput) -> dict[str, Any]:
    """The friendly API's reply (`PredictionResponse`'s shape) as plain JSON-ready values: built
    once and serialised once, with no per-row model objects on the hot path."""
    items: list[dict[str, Any]]
    if model.card.task == "regression":
        items = [{"value": value} for value in output.predictions.tolist()]
    elif output.probabilities is None:
        items = [{"label": label, "probabilities": None} for label in output.predictions.tolist()]
    else:
        # Shapes were checked by call_estimator. Column by column and without zip's `strict`:
        # for 10,000 rows this takes half the time of converting row by row with it.
        keys = model.class_keys
        columns = [column.tolist() for column in output.probabilities.T]
        items = [
            {"label": label, "probabilities": dict(zip(keys, row, strict=False))}
            for label, row in zip(
                output.predictions.tolist(), zip(*columns, strict=False), strict=False
            )
        ]
    return {"model_name": model.name, "model_version": model.version, "predictions": items}


def prediction_response(model: LoadedModel, output: ModelOutput) -> PredictionResponse:
    """The reply as a pydantic object, for callers that read it back (forms, CSV replies)."""
    return PredictionResponse.model_validate(prediction_document(model, output))


def predict(model: LoadedModel, rows: Rows, *, observe: bool = True) -> PredictionResponse:
    """Predictions for validated rows, in the friendly API's shape (no batching: for callers
    outside the event loop, such as the registry's self-check and tests)."""
    return prediction_response(model, run(model, rows, observe=observe))


def concatenate_rows(parts: list[Rows]) -> Rows:
    """Several requests' rows as one: a matrix when any part is one (only all-numeric models
    produce matrices, so every part converts), else one list of tuples."""
    if len(parts) == 1:
        return parts[0]
    if any(isinstance(part, np.ndarray) for part in parts):
        return np.concatenate([np.asarray(part, dtype=np.float64) for part in parts])
    rows: list[Row] = []
    for part in parts:
        assert isinstance(part, list)
        rows.extend(part)
    return rows
