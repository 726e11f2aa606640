"""Form submissions to rows and back: one field per feature plus options (`top_k`, `threshold`).

FastAPI-free, like the rest of the core: the router hands over the submitted fields and gets
validated rows; the data plane then runs them as for every other surface, and the reply is
the prediction envelope.
"""

from collections.abc import Callable, Sequence

from pydantic import ValidationError

from app.errors import InvalidInput, clean_errors
from app.serving.dataplane import Decoded
from app.serving.model import LoadedModel, ModelOutput, prediction_response
from app.serving.schema import Row
from schemas.forms import FormClassPrediction, FormOptions, FormPredictionResponse, RankedLabel
from schemas.predict import ClassPrediction, ValuePrediction

OPTION_FIELDS = frozenset(FormOptions.model_fields)


def read_form(
    model: LoadedModel, fields: Sequence[tuple[str, str]]
) -> tuple[list[Row], FormOptions]:
    """Validate submitted (name, value) pairs: every feature once, options at most once."""
    names = [name for name, _ in fields]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise InvalidInput(
            [
                {
                    "loc": ["form", name],
                    "msg": "Field given more than once",
                    "type": "duplicate_field",
                }
                for name in repeated
            ]
        )
    features = set(model.inputs.feature_names)
    record = {
        name: value.strip()
        for name, value in fields
        if name in features or name not in OPTION_FIELDS
    }
    # An empty option (a browser submits untouched optional inputs as "") means "not given".
    options = {
        name: value
        for name, value in fields
        if name in OPTION_FIELDS and name not in features and value.strip()
    }
    errors = []
    try:
        rows = model.inputs.validate_text_records([record], loc=("form",))
    except InvalidInput as exc:
        assert isinstance(exc.detail, list)
        # Drop the row index: a form is one row, so ["form", 0, "x"] reads better as ["form", "x"].
        errors += [{**issue, "loc": [issue["loc"][0], *issue["loc"][2:]]} for issue in exc.detail]
        rows = []
    try:
        parsed = FormOptions.model_validate(options)
    except ValidationError as exc:
        errors += [
            {**issue, "loc": ["form", *issue["loc"]]}
            for issue in clean_errors(exc.errors(include_url=False))
        ]
    else:
        errors += _option_errors(model, options, parsed)
    if errors:
        raise InvalidInput(errors)
    return rows, parsed


def _option_errors(
    model: LoadedModel, given: dict[str, str], options: FormOptions
) -> list[dict[str, object]]:
    classes = model.card.target.classes or []
    problems = []
    if "top_k" in given and model.card.task != "classification":
        problems.append(("top_k", "top_k applies to classifiers only"))
    elif options.top_k > max(len(classes), 1):
        problems.append(("top_k", f"top_k must be at most {len(classes)}, the number of classes"))
    if options.threshold is not None and len(classes) != 2:
        problems.append(("threshold", "threshold applies to binary classifiers only"))
    return [
        {"loc": ["form", field], "msg": msg, "type": "option_not_applicable"}
        for field, msg in problems
    ]


def form_request(
    fields: Sequence[tuple[str, str]],
) -> Callable[[LoadedModel], Decoded[FormOptions]]:
    """The decoder of one submitted form: its one row, and its options as the context."""

    def decode(model: LoadedModel) -> Decoded[FormOptions]:
        rows, options = read_form(model, fields)
        return Decoded(rows, options)

    return decode


def form_reply(
    model: LoadedModel, output: ModelOutput, options: FormOptions
) -> FormPredictionResponse:
    """The prediction envelope with the form's one item, ranked (`top_k`) and thresholded."""
    prediction = prediction_response(model, output)
    item = prediction.predictions[0]
    envelope = {"model_name": prediction.model_name, "model_version": prediction.model_version}
    if isinstance(item, ValuePrediction):
        return FormPredictionResponse(**envelope, predictions=[item])
    assert isinstance(item, ClassPrediction)
    answer = FormClassPrediction(label=item.label, probabilities=item.probabilities)
    if item.probabilities is not None:
        classes = model.card.target.classes or []
        by_key = dict(zip([str(c) for c in classes], classes, strict=True))
        ranked = sorted(item.probabilities.items(), key=lambda pair: pair[1], reverse=True)
        answer.top = [
            RankedLabel(label=by_key[key], probability=p) for key, p in ranked[: options.top_k]
        ]
        if options.threshold is not None:
            negative, positive = classes
            answer.threshold = options.threshold
            answer.label = (
                positive if item.probabilities[str(positive)] >= options.threshold else negative
            )
    return FormPredictionResponse(**envelope, predictions=[answer])
