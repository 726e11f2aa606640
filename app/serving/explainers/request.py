"""The explanation request: the same rows as a prediction request (validated by the version's
own input schema), and optionally the class to explain."""

from __future__ import annotations

import threading
import weakref
from typing import Annotated, Any, Literal, NotRequired

from pydantic import ConfigDict, Field, TypeAdapter, ValidationError
from typing_extensions import TypedDict

from app.serving.model import LoadedModel
from app.serving.schema import Rows, refuse_duplicate_keys

CLASS_KEY = "class"
_STRICT = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class ExplanationSchema:
    """One version's explanation request: `{"instances": [...], "class": <label>}`, where
    `class` (classifiers only) names the class whose output is explained, by its label or the
    label's text (the key of its probability in a prediction); without it, each row's
    predicted class is."""

    def __init__(self, model: LoadedModel) -> None:
        self.inputs = inputs = model.inputs
        labels = (
            list(model.card.target.classes or []) if model.card.task == "classification" else []
        )
        # The label itself, or its text: "3" names the class 3 as its probability's key does.
        self.class_index: dict[Any, int] = {}
        for index, label in enumerate(labels):
            self.class_index.setdefault((type(label), label), index)
            self.class_index.setdefault((str, str(label)), index)
        fields: dict[str, Any] = {"instances": inputs.instances_type}
        if labels:
            choices = tuple(dict.fromkeys([*labels, *(str(label) for label in labels)]))
            described = Field(
                description="The class to explain (default: each row's predicted class)."
            )
            fields[CLASS_KEY] = NotRequired[Annotated[Literal[choices], described]]
        make: Any = TypedDict
        request = make(f"{inputs.prefix}ExplanationRequest", fields)
        request.__pydantic_config__ = _STRICT
        self._adapter: TypeAdapter[dict[str, Any]] = TypeAdapter(request)

    def validate_json(self, body: bytes) -> tuple[Rows, int | None]:
        """The validated rows, in feature order, and the index of the requested class (into
        the estimator's `classes_`), if one was named."""
        try:
            parsed = self._adapter.validate_json(body)
        except ValidationError as exc:
            raise self.inputs.translate(exc, prefix=()) from exc
        refuse_duplicate_keys(body)
        rows = self.inputs.ordered(parsed["instances"])
        if CLASS_KEY not in parsed:
            return rows, None
        label = parsed[CLASS_KEY]
        return rows, self.class_index[(type(label), label)]

    def json_schema(self, ref_template: str) -> dict[str, Any]:
        return self._adapter.json_schema(ref_template=ref_template)


_SCHEMAS: weakref.WeakKeyDictionary[LoadedModel, ExplanationSchema] = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def explanation_schema(model: LoadedModel) -> ExplanationSchema:
    """The version's explanation request schema, built on first use and kept."""
    schema = _SCHEMAS.get(model)
    if schema is None:
        with _LOCK:
            schema = _SCHEMAS.get(model)
            if schema is None:
                schema = _SCHEMAS[model] = ExplanationSchema(model)
    return schema
