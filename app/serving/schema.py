"""A model's input schema, generated from its card: validates rows from every surface and builds
the estimator's input (arrays, or DataFrames for models fitted on DataFrames). Free of FastAPI.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
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
from typing_extensions import TypedDict

from app.errors import InvalidInput, MalformedBody, clean_errors
from app.serving.json_keys import first_repeated_key
from schemas.cards import FeatureSpec, FeatureValue, ModelCard

if TYPE_CHECKING:
    pass


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
        self.instance_type = instance  # one row: for requests with rows and more (explanations)
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
            raise self.translate(exc, prefix=()) from exc
        refuse_duplicate_keys(body)
        return self.ordered(parsed["instances"])

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
            raise self.translate(exc, prefix=loc) from exc
        return self.ordered(parsed)

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
        return self.ordered(parsed)

    def translate(self, exc: ValidationError, *, prefix: tuple[str, ...]) -> Exception:
        """A validation failure as the service's error: malformed JSON, too many rows, or the
        offending cells (locations under `prefix`)."""
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

    def ordered(self, instances: list[Any]) -> list[Row]:
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


def refuse_duplicate_keys(body: bytes) -> None:
    """Refuse objects with a repeated key (I-JSON, RFC 7493) rather than silently keep the last.

    The JSON parser behind validation keeps the last, so an exact check needs a second parse.
    Array-form bodies skip it when their only object is the top level, naming "instances" once
    with no escapes: then no key can repeat. Records-form bodies always pay for the check.
    """
    if body.count(b"{") == 1 and body.count(b'"instances"') == 1 and b"\\" not in body:
        return
    try:
        repeated = first_repeated_key(body)
    except (ValueError, RecursionError) as exc:
        raise MalformedBody(f"Request body could not be read: {exc}"[:300]) from exc
    if repeated is not None:
        raise InvalidInput(
            [{"loc": [repeated], "msg": f"Duplicate key {repeated!r}", "type": "duplicate_key"}]
        )


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
