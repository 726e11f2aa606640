"""The explanation request: the same rows as a prediction request (validated by the version's
own input schema), and optionally the class to explain."""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from typing import Annotated, Any, NotRequired

from pydantic import (
    ConfigDict,
    Field,
    PlainValidator,
    TypeAdapter,
    ValidationError,
    WithJsonSchema,
)
from pydantic_core import PydanticCustomError
from typing_extensions import TypedDict

from app.serving.explainers import plan
from app.serving.explainers.base import Baseline
from app.serving.explainers.enumeration import MAX_EVALUATIONS
from app.serving.model import LoadedModel
from app.serving.schema import Rows, refuse_duplicate_keys, too_many_rows

CLASS_KEY = "class"
_STRICT = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class ExplanationSchema:
    """One version's explanation request: `{"instances": [...], "class": <label>}`, where
    `class` (classifiers only) names the class whose output is explained, by its label or the
    label's text (the key of its probability in a prediction); without it, each row's
    predicted class is. At most `max_rows` rows (the schema's `maxItems`, so the docs say it)."""

    def __init__(self, model: LoadedModel, max_rows: int) -> None:
        self.inputs = inputs = model.inputs
        self.max_rows = max_rows
        labels = (
            list(model.card.target.classes or []) if model.card.task == "classification" else []
        )
        # The label itself, or its text: "3" names the class 3 as its probability's key does.
        self.class_index: dict[Any, int] = {}
        for index, label in enumerate(labels):
            self.class_index.setdefault((type(label), label), index)
            self.class_index.setdefault((str, str(label)), index)
        instance: Any = inputs.instance_type
        instances: Any = Annotated[list[instance], Field(min_length=1, max_length=max_rows)]
        fields: dict[str, Any] = {"instances": instances}
        if labels:
            choices = list(dict.fromkeys([*labels, *(str(label) for label in labels)]))
            fields[CLASS_KEY] = NotRequired[
                Annotated[
                    Any,
                    PlainValidator(self._known_class(choices)),
                    WithJsonSchema(
                        {
                            "enum": choices,
                            "description": "The class to explain (default: each row's "
                            "predicted class).",
                        }
                    ),
                ]
            ]
        make: Any = TypedDict
        request = make(f"{inputs.prefix}ExplanationRequest", fields)
        request.__pydantic_config__ = _STRICT
        self._adapter: TypeAdapter[dict[str, Any]] = TypeAdapter(request)

    def _known_class(self, choices: list[Any]) -> Callable[[Any], Any]:
        """A validator of the class: one of the labels, or a label's text, of the same JSON type
        (so `false` is not the class 0, nor `1.0` the class 1, though Python finds them equal)."""
        expected = ", ".join(repr(choice) for choice in choices[:-1])
        expected = f"{expected} or {choices[-1]!r}" if expected else repr(choices[-1])

        def check(value: Any) -> Any:
            hashable = isinstance(value, str | int | float)  # a JSON object or array is no label
            if not hashable or (type(value), value) not in self.class_index:
                raise PydanticCustomError(
                    "literal_error", "Input should be {expected}", {"expected": expected}
                )
            return value

        return check

    def validate_json(self, body: bytes) -> tuple[Rows, int | None]:
        """The validated rows, in feature order, and the index of the requested class (into
        the estimator's `classes_`), if one was named."""
        try:
            parsed = self._adapter.validate_json(body)
        except ValidationError as exc:
            if any(
                error["type"] == "too_long" and tuple(error["loc"]) == ("instances",)
                for error in exc.errors(include_url=False)
            ):
                raise too_many_rows(self.max_rows, ["instances"]) from exc
            raise self.inputs.translate(exc, prefix=()) from exc
        refuse_duplicate_keys(body)
        rows = self.inputs.ordered(parsed["instances"])
        if CLASS_KEY not in parsed:
            return rows, None
        label = parsed[CLASS_KEY]
        return rows, self.class_index[(type(label), label)]

    def json_schema(self, ref_template: str) -> dict[str, Any]:
        return self._adapter.json_schema(ref_template=ref_template)


def row_limit(model: LoadedModel, max_rows: int) -> int:
    """The most rows one explanation request to the version may carry: `max_rows`, or fewer for
    a model explained by enumerating feature subsets (so it calls the model on at most
    MAX_EVALUATIONS rows)."""
    planned = plan(model)
    if isinstance(planned, str) or planned[0] != "exact-shapley":
        return max_rows
    per_row = (1 << len(model.inputs.feature_names)) * Baseline.of(model.card).combinations
    return max(1, min(max_rows, MAX_EVALUATIONS // per_row))


_SCHEMAS: weakref.WeakKeyDictionary[LoadedModel, dict[int, ExplanationSchema]] = (
    weakref.WeakKeyDictionary()
)
_LOCK = threading.Lock()


def explanation_schema(model: LoadedModel, max_rows: int) -> ExplanationSchema:
    """The version's explanation request schema for the service's row limit, built on first
    use and kept."""
    schema = _SCHEMAS.get(model, {}).get(max_rows)
    if schema is None:
        with _LOCK:
            built = _SCHEMAS.setdefault(model, {})
            schema = built.get(max_rows)
            if schema is None:
                schema = built[max_rows] = ExplanationSchema(model, row_limit(model, max_rows))
    return schema
