"""Explanations: each feature's contribution to one prediction (docs/explanations.md).

    explainer_of(model) -> Explainer     # built on a version's first explanation, then kept
    explain(model, rows, classes)        # Attribution: base value + contributions per row

Which method explains a version, by its estimator:
  * trees, forests, gradient boosting: exact TreeSHAP (trees.py), probability or margin;
  * linear models behind per-feature steps (scalers, one-hot): exact, on the margin (linear.py);
  * anything else with at most ten features: exact Shapley values by enumerating feature
    subsets (enumeration.py), with a row cap;
  * the rest: a 501 (`NotExplainable`) that says why.
"""

from __future__ import annotations

import threading
import weakref
from typing import Literal

from app.errors import NotExplainable
from app.serving.explainers.base import Attribution, Explainer, Output
from app.serving.explainers.enumeration import EnumerationExplainer, enumeration_reason
from app.serving.explainers.linear import LinearExplainer, is_additive
from app.serving.explainers.trees import BOOSTED, TREE_TYPES, TreeExplainer, tree_reason
from app.serving.model import LoadedModel

__all__ = [
    "Attribution",
    "Explainer",
    "Output",
    "build_explainer",
    "built_explainer",
    "explainer_of",
    "plan",
]

_BUILT: weakref.WeakKeyDictionary[LoadedModel, Explainer | str] = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def explainer_of(model: LoadedModel) -> Explainer:
    """The version's explainer, built once (in this process) on its first explanation; a
    `NotExplainable` (501) when no exact method applies. Building may take a while (a forest's
    paths): call it off the event loop unless `built_explainer` has it."""
    found = _BUILT.get(model)
    if found is None:
        with _LOCK:
            found = _BUILT.get(model)
            if found is None:
                found = _BUILT[model] = build_explainer(model)
    return _usable(model, found)


def built_explainer(model: LoadedModel) -> Explainer | None:
    """The version's explainer if already built (None if not yet), at no cost."""
    found = _BUILT.get(model)
    return None if found is None else _usable(model, found)


def _usable(model: LoadedModel, found: Explainer | str) -> Explainer:
    if isinstance(found, str):
        raise NotExplainable(f"Model {model.name} v{model.version} cannot be explained: {found}")
    return found


Method = Literal["tree-shap", "linear", "exact-shapley"]


def plan(model: LoadedModel) -> tuple[Method, Output] | str:
    """Which method explains the version and what output, without building anything (for the
    docs); or why none does."""
    estimator = model.estimator
    classifier = model.card.task == "classification"
    label = type(estimator).__name__
    if type(estimator) in TREE_TYPES and tree_reason(estimator) is None:
        boosted = type(estimator) in BOOSTED
        return "tree-shap", ("margin" if boosted else "probability") if classifier else "value"
    if is_additive(estimator):
        return "linear", "margin" if classifier else "value"
    reason = enumeration_reason(model.inputs)
    if reason is not None:
        return f"{label} is neither a tree model nor linear, and has {reason}"
    if not classifier:
        return "exact-shapley", "value"
    if hasattr(estimator, "predict_proba"):
        return "exact-shapley", "probability"
    if hasattr(estimator, "decision_function"):
        return "exact-shapley", "margin"
    return f"{label} has neither predict_proba nor decision_function"


def build_explainer(model: LoadedModel) -> Explainer | str:
    """The version's explainer, or why there is none."""
    planned = plan(model)
    if isinstance(planned, str):
        return planned
    classifier = model.card.task == "classification"
    method = planned[0]
    if method == "tree-shap":
        return TreeExplainer(model.estimator, model.inputs)
    if method == "linear":
        return LinearExplainer(model.estimator, model.inputs, classifier=classifier)
    return EnumerationExplainer(model.estimator, model.inputs, classifier=classifier)
