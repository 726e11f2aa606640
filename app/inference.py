"""The inference core: from request bytes (or Python rows) to predictions, free of FastAPI.

Every surface (JSON, file, form and v2) goes through an `InputSchema.validate_*` method and
then `run` (the one call into the estimator), so validation rules, prediction behaviour and
metrics are the same everywhere.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Annotated, Any, Literal

import numpy as np
import pandas as pd
import simdjson
from pydantic import (
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    TypeAdapter,
    ValidationError,
)
from sklearn.ensemble import RandomForestClassifier
from sklearn.pipeline import Pipeline
from sklearn.tree import DecisionTreeClassifier
from typing_extensions import TypedDict

from app.errors import InferenceError, InvalidInput, MalformedBody, clean_errors
from app.metrics import BATCH_SIZE, PREDICTED_ROWS, PREDICTIONS
from schemas.cards import FeatureSpec, FeatureValue, ModelCard
from schemas.predict import PredictionResponse

if TYPE_CHECKING:
    from app.batching import BatchPolicy, MicroBatcher

# Strict: no "1" for 1, no true for 1.0, no null; finite floats only (NaN, ±inf and overflowing
# numbers such as 1e999 are rejected while parsing); unknown keys are errors, not ignored.
_STRICT = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)
# Text cells (CSV, form fields) are strings by nature: parse them ("5.1" -> 5.1) but keep every
# other rule (finite, bounds, categories, no unknown or missing keys).
_TEXT = ConfigDict(extra="forbid", strict=False, allow_inf_nan=False)
# Integers beyond 2**53 cannot be held exactly by the float64 matrices models receive.
_INT_LIMIT = 2**53
# Floats beyond float32's range are finite in JSON but become infinity in estimators that
# compute in float32 (trees and forests do), so they are refused up front.
FLOAT32_MAX = float(np.finfo(np.float32).max)
_INSTANCE_SHAPE_ERROR = (
    "Each instance must be an object keyed by feature name or an array in feature order"
)

Row = tuple[FeatureValue, ...]
Matrix = np.ndarray[Any, np.dtype[np.float64]]
# Validated rows, in feature order: tuples, or (for models whose features are all numeric) a
# float64 matrix checked in one vectorised pass.
Rows = list[Row] | Matrix


def too_many_rows(limit: int, loc: Sequence[str | int]) -> InvalidInput:
    """More rows than `limit`: the documented `maxItems` of the rows, so a 422 like any other
    schema violation, on every surface (413 is for bodies over the byte limit)."""
    return InvalidInput(
        [
            {
                "loc": list(loc),
                "msg": f"Too many rows: at most {limit} per request",
                "type": "too_long",
            }
        ]
    )


def _instance_kind(value: Any) -> str | None:
    if isinstance(value, dict):
        return "record"
    if isinstance(value, list | tuple):
        return "row"
    return None


def _integral_float_to_int(value: Any) -> Any:
    """3.0 is an integer (as JSON Schema says); 3.5, true and "3" are still refused."""
    if type(value) is float and value.is_integer():
        return int(value)
    return value


def _bounds(feature: FeatureSpec) -> tuple[float, float]:
    """The inclusive range a numeric feature accepts: the card's bounds, tightened to what the
    model's matrices can hold (exact integers up to 2**53; finite float32 for floats)."""
    if feature.dtype == "int":
        low = (
            -_INT_LIMIT if feature.minimum is None else max(-_INT_LIMIT, math.ceil(feature.minimum))
        )
        high = (
            _INT_LIMIT if feature.maximum is None else min(_INT_LIMIT, math.floor(feature.maximum))
        )
        return float(low), float(high)
    lowest = -FLOAT32_MAX if feature.minimum is None else max(feature.minimum, -FLOAT32_MAX)
    highest = FLOAT32_MAX if feature.maximum is None else min(feature.maximum, FLOAT32_MAX)
    return lowest, highest


def _feature_type(feature: FeatureSpec) -> Any:
    description = feature.description
    if feature.observed_min is not None and feature.observed_max is not None:
        description = f"{description} (seen in training: {feature.observed_min:g} to {feature.observed_max:g})".strip()
    common: dict[str, Any] = {"description": description or None}
    if feature.dtype == "category":
        assert feature.categories is not None
        return Annotated[Literal[tuple(feature.categories)], Field(**common)]
    low, high = _bounds(feature)
    if feature.dtype == "int":
        # Field before the validator: the other order documents `ge`/`le` instead of
        # `minimum`/`maximum` in the JSON schema (seen with pydantic 2.14).
        return Annotated[
            int, Field(ge=int(low), le=int(high), **common), BeforeValidator(_integral_float_to_int)
        ]
    return Annotated[float, Field(ge=low, le=high, **common)]


def _typed_dict(name: str, fields: dict[str, Any], config: ConfigDict = _STRICT) -> Any:
    # The functional form, because feature names need not be Python identifiers ("mean radius").
    make: Any = TypedDict
    typed = make(name, fields)
    typed.__pydantic_config__ = config
    return typed


def _schema_prefix(card: ModelCard) -> str:
    words = re.split(r"[^a-zA-Z0-9]+", card.name)
    return "".join(word.capitalize() for word in words if word) + f"V{card.version}"


class InputSchema:
    """A model's request schema, generated from its card: validates rows and builds model input."""

    def __init__(
        self, card: ModelCard, *, max_rows: int, frame_columns: list[str] | None = None
    ) -> None:
        """`frame_columns`: the model's `feature_names_in_` when it was fitted on a DataFrame."""
        self.card = card
        self.max_rows = max_rows
        self.frame_columns = frame_columns
        self.feature_names = [feature.name for feature in card.features]
        self.prefix = _schema_prefix(card)
        types = [_feature_type(feature) for feature in card.features]
        # Types built at run time from the card, so they are `Any` to mypy.
        record = _typed_dict(
            f"{self.prefix}Record", dict(zip(self.feature_names, types, strict=True))
        )
        row: Any = tuple.__class_getitem__(tuple(types))  # tuple[t1, t2, ...], in feature order
        instance: Any = Annotated[
            Annotated[record, Tag("record")] | Annotated[row, Tag("row")],
            Discriminator(
                _instance_kind,
                custom_error_type="instance_type",
                custom_error_message=_INSTANCE_SHAPE_ERROR,
            ),
        ]
        instances: Any = Annotated[list[instance], Field(min_length=1, max_length=max_rows)]
        request = _typed_dict(f"{self.prefix}PredictionRequest", {"instances": instances})
        self._adapter: TypeAdapter[dict[str, list[Any]]] = TypeAdapter(request)
        self._rows_adapter: TypeAdapter[list[Any]] = TypeAdapter(instances, config=_STRICT)
        text_record = _typed_dict(
            f"{self.prefix}TextRecord", dict(zip(self.feature_names, types, strict=True)), _TEXT
        )
        self._text_adapter: TypeAdapter[list[dict[str, Any]]] = TypeAdapter(list[text_record])  # type: ignore[valid-type]
        self.example = self._example()
        # For the vectorised check of all-numeric rows (see `validate_matrix`).
        self.numeric = all(feature.dtype != "category" for feature in card.features)
        if self.numeric:
            bounds = np.array([_bounds(feature) for feature in card.features], dtype=np.float64)
            self._lowest, self._highest = bounds[:, 0], bounds[:, 1]
            self._int_columns = np.array([f.dtype == "int" for f in card.features], dtype=bool)

    # -- validation ---------------------------------------------------------------------------
    def validate_json(self, body: bytes) -> Rows:
        """Parse and validate a `{"instances": [...]}` body in one pass, straight from bytes."""
        matrix = self._numeric_array_body(body)
        return matrix if matrix is not None else self.validate_json_exactly(body)

    def validate_json_exactly(self, body: bytes) -> list[Row]:
        """Cell by cell with pydantic: the path that names every offending cell."""
        try:
            parsed = self._adapter.validate_json(body)
        except ValidationError as exc:
            raise self._translate(exc, prefix=()) from exc
        _refuse_duplicate_keys(body)
        return self._ordered(parsed["instances"])

    def validate_matrix(self, matrix: Matrix) -> Matrix | None:
        """Check a float64 matrix of rows in one vectorised pass: the matrix if every cell is
        finite and within its feature's bounds (integral for int features) and the row count is
        allowed; None when anything is off, so the caller takes the exact path, which names the
        offending cells. Accepts exactly what the per-cell validation accepts."""
        rows = len(matrix)
        if (
            not self.numeric
            or matrix.ndim != 2
            or matrix.shape[1] != len(self.feature_names)
            or not 1 <= rows <= self.max_rows
        ):
            return None
        # NaN compares False (without a warning), so it is refused here too.
        if not ((matrix >= self._lowest) & (matrix <= self._highest)).all():
            return None
        if self._int_columns.any():
            integers = matrix[:, self._int_columns]
            # |x| < 2**53 strictly: a larger integer may have been rounded on its way to float64.
            if not ((integers == np.floor(integers)) & (np.abs(integers) < _INT_LIMIT)).all():
                return None
        return matrix

    def _numeric_array_body(self, body: bytes) -> Matrix | None:
        """The fast path for the common body: array rows of numbers for an all-numeric model.

        None (take the exact path) unless the body's skeleton, once numbers, commas and
        whitespace are deleted, is exactly `{"instancs":[` + `[]` per row + `]}` (the key's
        letters less its "e"s): one object, one key, an array of flat arrays and nothing else:
        no string, no true/false/null/NaN, no nesting. Then `number_rows` parses it."""
        if not self.numeric:
            return None
        skeleton = body.translate(None, NUMBER_TEXT_BYTES)
        if not (skeleton.startswith(_SKELETON_HEAD) and skeleton.endswith(_SKELETON_TAIL)):
            return None
        # (Head and tail cannot overlap: the head ends with "[", the tail starts with "]".)
        arrays = skeleton[len(_SKELETON_HEAD) : -len(_SKELETON_TAIL)]
        rows = len(arrays) // 2
        if arrays != b"[]" * rows:
            return None
        matrix = number_rows(body, rows=rows, width=len(self.feature_names), key="instances")
        return None if matrix is None else self.validate_matrix(matrix)

    def validate_rows(
        self, rows: Sequence[Any], *, loc: tuple[str, ...] = ("instances",)
    ) -> list[Row]:
        """Validate rows that another surface (file, form, tensor) has already decoded."""
        # Strict Python validation takes only tuples for fixed-length rows (JSON arrays are fine).
        rows = [tuple(row) if isinstance(row, list) else row for row in rows]
        try:
            parsed = self._rows_adapter.validate_python(rows)
        except ValidationError as exc:
            raise self._translate(exc, prefix=loc) from exc
        return self._ordered(parsed)

    def validate_text_records(
        self, records: Sequence[dict[str, str]], *, loc: tuple[str, ...], first_index: int = 0
    ) -> list[Row]:
        """Validate rows whose cells are text (CSV cells, form fields): each record maps feature
        name to its text. Error locations are `[*loc, first_index + i, feature]`."""
        if len(records) > self.max_rows:
            raise too_many_rows(self.max_rows, loc)
        try:
            parsed = self._text_adapter.validate_python(records)
        except ValidationError as exc:
            cleaned = clean_errors(exc.errors(include_url=False))
            for issue in cleaned:
                index, *rest = issue["loc"]
                issue["loc"] = (
                    [*loc, first_index + index, *rest]
                    if isinstance(index, int)
                    else [*loc, index, *rest]
                )
            raise InvalidInput(cleaned) from exc
        return self._ordered(parsed)

    def _translate(self, exc: ValidationError, *, prefix: tuple[str, ...]) -> Exception:
        errors = exc.errors(include_url=False)
        if any(error["type"] == "json_invalid" for error in errors):
            messages = "; ".join(
                error["msg"] for error in errors if error["type"] == "json_invalid"
            )
            return MalformedBody(f"Request body is not valid JSON: {messages}")
        for error in errors:
            if error["type"] == "too_long" and tuple(error["loc"]) in {("instances",), ()}:
                return too_many_rows(self.max_rows, [*prefix, *error["loc"]])
        cleaned = clean_errors(errors)
        for issue in cleaned:
            issue["loc"] = [*prefix, *issue["loc"]]
        return InvalidInput(cleaned)

    def _ordered(self, instances: list[Any]) -> list[Row]:
        names = self.feature_names
        return [
            tuple(item[name] for name in names) if isinstance(item, dict) else item
            for item in instances
        ]

    # -- model input --------------------------------------------------------------------------
    def to_model_input(self, rows: Rows) -> np.ndarray[Any, Any] | pd.DataFrame:
        """Arrays for models trained on arrays; DataFrames with the fitted column names for models
        trained on DataFrames (so neither kind sees sklearn's feature-name warning)."""
        features = self.card.features
        if self.frame_columns is not None:
            columns: Any = rows.T if isinstance(rows, np.ndarray) else zip(*rows, strict=True)
            data = {
                feature.name: np.asarray(column, dtype=_numpy_dtype(feature))
                for feature, column in zip(features, columns, strict=True)
            }
            return pd.DataFrame({name: data[name] for name in self.frame_columns})
        if self.numeric:
            return np.asarray(rows, dtype=np.float64)
        return np.asarray(rows, dtype=object)

    # -- documentation ------------------------------------------------------------------------
    def json_schema(self, ref_template: str) -> dict[str, Any]:
        return self._adapter.json_schema(ref_template=ref_template)

    def _example(self) -> dict[str, Any]:
        if self.card.example is not None:
            row = list(self.card.example)
        else:
            row = [_default_value(feature) for feature in self.card.features]
        return {"instances": [dict(zip(self.feature_names, row, strict=True))]}


# The bytes of numbers, the commas between them and blank space: what text holding nothing but
# numbers is made of besides its structure. Deleted from an `{"instances": [[numbers...], ...]}`
# body they must leave exactly the skeleton `{"instancs":[` + `[]` per row + `]}`; from the
# data lines of a numbers-only CSV, nothing.
NUMBER_TEXT_BYTES = b"0123456789.eE+-, \t\r\n"
_SKELETON_HEAD = b'{"instancs":['
_SKELETON_TAIL = b"]}"


def number_rows(
    text: bytes, *, width: int, rows: int | None = None, key: str | None = None
) -> Matrix | None:
    """The JSON array of arrays of `width` numbers (`rows` of them, when given) that `text` is,
    or that its one key `key` holds, parsed by simdjson into one float64 matrix with no Python
    object per cell.

    simdjson checks the whole JSON grammar and rounds each number correctly (as orjson and
    Python do). None when `text` is anything else, or holds a number simdjson will not (beyond
    64-bit integers or float64's range): the caller then takes its exact path."""
    try:
        # A parser per call: a parser keeps its buffers at the largest document it has seen.
        document: Any = simdjson.Parser().parse(text)
        if key is not None:
            if not isinstance(document, simdjson.Object) or list(document) != [key]:
                return None
            document = document[key]
        if not isinstance(document, simdjson.Array) or rows not in (None, len(document)):
            return None
        arrays: Any = document  # rows: Arrays, unless a number stands among them
        if len(arrays) and set(map(len, arrays)) != {width}:
            return None  # ragged rows, or a number among the rows
        cells = document.as_buffer(of_type="d")
    except (ValueError, RuntimeError, TypeError):
        return None
    return np.frombuffer(cells, dtype=np.float64).reshape(-1, width)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen = dict(pairs)
    if len(seen) != len(pairs):
        names = [name for name, _ in pairs]
        duplicate = next(name for name in names if names.count(name) > 1)
        raise InvalidInput(
            [{"loc": [duplicate], "msg": f"Duplicate key {duplicate!r}", "type": "duplicate_key"}]
        )
    return seen


def _refuse_duplicate_keys(body: bytes) -> None:
    """Refuse objects with a repeated key (I-JSON, RFC 7493) rather than silently keep the last.

    The JSON parser behind validation keeps the last, so an exact check needs a second parse.
    Array-form bodies skip it when their only object is the top level, naming "instances" once
    with no escapes: then no key can repeat. Records-form bodies always pay for the check.
    """
    if body.count(b"{") == 1 and body.count(b'"instances"') == 1 and b"\\" not in body:
        return
    json.loads(body, object_pairs_hook=_unique_keys)


def _numpy_dtype(feature: FeatureSpec) -> Any:
    return {"float": np.float64, "int": np.int64, "category": object}[feature.dtype]


def _default_value(feature: FeatureSpec) -> FeatureValue:
    if feature.categories:
        return feature.categories[0]
    candidates = [feature.observed_min, feature.minimum, 0.0, feature.maximum]
    value = next((c for c in candidates if c is not None and _within(feature, c)), 0.0)
    return int(math.ceil(value)) if feature.dtype == "int" else float(value)


def _within(feature: FeatureSpec, value: float) -> bool:
    return (feature.minimum is None or value >= feature.minimum) and (
        feature.maximum is None or value <= feature.maximum
    )


def labels_follow_probabilities(estimator: Any) -> bool:
    """Whether `predict` is by definition `classes_[argmax(predict_proba)]` (trees and forests:
    their `predict` computes exactly that), so one `predict_proba` pass answers both. Other
    classifiers (e.g. SVC with Platt scaling) may disagree with their own probabilities."""
    final = estimator[-1] if isinstance(estimator, Pipeline) else estimator
    # The inherited methods themselves (shared by ExtraTrees*, ExtraTree*): a subclass that
    # overrides `predict` keeps its own.
    return getattr(type(final), "predict", None) in _ARGMAX_PREDICTS


_ARGMAX_PREDICTS = (RandomForestClassifier.predict, DecisionTreeClassifier.predict)


@dataclass(frozen=True, eq=False)  # identity: a loaded version is one object, never compared
class LoadedModel:
    """One model version in memory: its card, the fitted estimator and its input schema."""

    card: ModelCard
    estimator: Any
    inputs: InputSchema = field(repr=False)
    example_response: dict[str, Any] | None = field(default=None, repr=False)
    batch_policy: BatchPolicy | None = field(default=None, repr=False)

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
    def batcher(self) -> MicroBatcher:
        """This version's micro-batcher in this process (made on first use: after the fork)."""
        from app.batching import BatchPolicy, MicroBatcher

        return MicroBatcher(self, self.batch_policy or BatchPolicy())

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
        model.metrics[2].observe(len(rows))
    features = model.inputs.to_model_input(rows)
    estimator = model.estimator
    where = f"Model {model.name} v{model.version}"
    classes = indices = None
    try:
        # Overflow on extreme (but finite) inputs is judged per row by check_output, not here.
        with np.errstate(all="ignore"):
            if model.labels_from_probabilities:
                proba = estimator.predict_proba(features)
                classes, indices = np.asarray(estimator.classes_), np.argmax(proba, axis=1)
                raw = classes.take(indices, axis=0)
            else:
                raw = estimator.predict(features)
                proba = estimator.predict_proba(features) if model.has_probabilities else None
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


def check_output(model: LoadedModel, output: ModelOutput, *, observe: bool = True) -> ModelOutput:
    """One request's share of an estimator call, refused (422 naming the rows, counted from the
    request's first row) where the model gave no finite answer."""
    if observe:
        predictions, rows, _ = model.metrics
        predictions.inc()
        rows.inc(len(output))
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
