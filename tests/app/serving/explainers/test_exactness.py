"""Explanations equal Shapley values computed the slow way: every subset of features
enumerated with the same value function, on small real models."""

from itertools import combinations
from math import factorial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import (
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    RandomForestClassifier,
)
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.neighbors import KNeighborsRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MinMaxScaler, StandardScaler
from sklearn.svm import SVC
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

from app.serving.explainers import build_explainer, plan
from app.serving.model import LoadedModel
from app.serving.registry import load_version
from schemas.cards import FeatureSpec
from tests.conftest import fit_pets_pipeline, pets_features, pets_frame, write_model

TOLERANCE = 1e-9


def load(
    store: Path, estimator: Any, name: str, features: list[FeatureSpec], **card: Any
) -> LoadedModel:
    write_model(store, estimator, name=name, features=features, **card)
    return load_version(store / name / "1", name=name, version=1, max_rows=10_000, trusted_types=[])


def shapley(value: Any, n: int) -> np.ndarray[Any, Any]:
    """Shapley values of the game `value(frozenset) -> float` over n players, by definition."""
    phi = np.zeros(n)
    for i in range(n):
        others = [j for j in range(n) if j != i]
        for size in range(n):
            weight = factorial(size) * factorial(n - size - 1) / factorial(n)
            for subset in combinations(others, size):
                known = frozenset(subset)
                phi[i] += weight * (value(known | {i}) - value(known))
    return phi


def tree_expectation(
    tree: Any, x: np.ndarray[Any, Any], known: frozenset[int], column: int
) -> float:
    """Lundberg's EXPVALUE: the tree's output when only the `known` features are, unknown ones
    averaged over the training samples each branch saw."""

    def walk(node: int) -> float:
        left, right = tree.children_left[node], tree.children_right[node]
        if left == -1:
            return float(tree.value[node, 0, column])
        feature = tree.feature[node]
        if feature in known:
            return walk(left if x[feature] <= tree.threshold[node] else right)
        weights = tree.weighted_n_node_samples
        return float((weights[left] * walk(left) + weights[right] * walk(right)) / weights[node])

    return walk(0)


def features(n: int) -> list[FeatureSpec]:
    return [FeatureSpec(name=f"x{i}", dtype="float") for i in range(n)]


def data(n_rows: int = 200, n: int = 4) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(n_rows, n)).round(3)
    y = np.where(x[:, 0] + 0.5 * x[:, 1] - x[:, 2] * x[:, 3] > 0, "yes", "no")
    return x, y


def rows_to_explain() -> np.ndarray[Any, Any]:
    x, _ = data()
    return x[:12]


def test_tree_shap_equals_enumeration_on_a_depth_3_tree(tmp_path: Path) -> None:
    x, y = data()
    tree = DecisionTreeClassifier(max_depth=3, random_state=0).fit(x, y)
    model = load(tmp_path, tree, "tree", features(4), task="classification", classes=["no", "yes"])
    explainer = build_explainer(model)
    assert not isinstance(explainer, str)
    assert (explainer.method, explainer.output) == ("tree-shap", "probability")
    rows = rows_to_explain()
    for column in (0, 1):
        found = explainer.explain(rows, np.full(len(rows), column))
        for row, contributions, base in zip(rows, found.contributions, found.base, strict=True):
            x32 = row.astype(np.float32).astype(np.float64)

            def game(known: frozenset[int], x32: Any = x32, column: int = column) -> float:
                return tree_expectation(tree.tree_, x32, known, column)

            np.testing.assert_allclose(contributions, shapley(game, 4), atol=TOLERANCE)
            assert base == pytest.approx(game(frozenset()), abs=TOLERANCE)


def test_tree_shap_equals_enumeration_on_a_forest_and_a_regression_tree(tmp_path: Path) -> None:
    x, y = data()
    forest = RandomForestClassifier(n_estimators=5, max_depth=4, random_state=0).fit(x, y)
    model = load(
        tmp_path, forest, "forest", features(4), task="classification", classes=["no", "yes"]
    )
    explainer = build_explainer(model)
    assert not isinstance(explainer, str)
    rows = rows_to_explain()
    found = explainer.explain(rows, np.ones(len(rows), dtype=np.intp))
    for row, contributions in zip(rows, found.contributions, strict=True):
        x32 = row.astype(np.float32).astype(np.float64)

        def game(known: frozenset[int], x32: Any = x32) -> float:
            trees = forest.estimators_
            return sum(tree_expectation(t.tree_, x32, known, 1) for t in trees) / len(trees)

        np.testing.assert_allclose(contributions, shapley(game, 4), atol=TOLERANCE)

    target = x @ np.array([1.0, -2.0, 0.5, 3.0])
    regressor = DecisionTreeRegressor(max_depth=3, random_state=0).fit(x, target)
    model = load(tmp_path, regressor, "reg", features(4), task="regression")
    explainer = build_explainer(model)
    assert not isinstance(explainer, str) and explainer.output == "value"
    found = explainer.explain(rows, None)
    for row, contributions in zip(rows, found.contributions, strict=True):
        x32 = row.astype(np.float32).astype(np.float64)

        def game_of_tree(known: frozenset[int], x32: Any = x32) -> float:
            return tree_expectation(regressor.tree_, x32, known, 0)

        np.testing.assert_allclose(contributions, shapley(game_of_tree, 4), atol=TOLERANCE)


@pytest.mark.parametrize("classes", [2, 3])
def test_gradient_boosting_explains_its_margin_exactly(tmp_path: Path, classes: int) -> None:
    x, _ = data()
    y = (np.digitize(x[:, 0] + x[:, 1], [-0.5, 0.5]) % classes).astype(int)
    boosted = GradientBoostingClassifier(n_estimators=4, max_depth=2, random_state=0).fit(x, y)
    model = load(
        tmp_path,
        boosted,
        "boosted",
        features(4),
        task="classification",
        classes=list(range(classes)),
    )
    explainer = build_explainer(model)
    assert not isinstance(explainer, str) and explainer.output == "margin"
    rows = rows_to_explain()
    rate, stages = boosted.learning_rate, boosted.estimators_
    start = boosted._raw_predict_init(rows[:1].astype(np.float32))[0]
    for column in range(classes):
        found = explainer.explain(rows, np.full(len(rows), column))
        for row, contributions, base in zip(rows, found.contributions, found.base, strict=True):
            x32 = row.astype(np.float32).astype(np.float64)
            # Two classes: one margin, class 1's log-odds; class 0's is its negative.
            k, sign = (0, 1 if column == 1 else -1) if classes == 2 else (column, 1)

            def game(known: frozenset[int], x32: Any = x32, k: int = k, sign: int = sign) -> float:
                total = start[k] + rate * sum(
                    tree_expectation(stage[k].tree_, x32, known, 0) for stage in stages
                )
                return float(sign * total)

            np.testing.assert_allclose(contributions, shapley(game, 4), atol=TOLERANCE)
            assert base == pytest.approx(game(frozenset()), abs=TOLERANCE)


def baseline_game(model: LoadedModel, row: list[Any], output: Any) -> Any:
    """v(S): the expected `output` with features outside S drawn from the card's baseline
    (means; category frequencies), independently."""
    card = model.card
    options: list[list[tuple[Any, float]]] = []
    for feature in card.features:
        if feature.dtype == "category":
            assert feature.categories is not None
            shares = feature.observed_frequencies or dict.fromkeys(feature.categories, 1.0)
            total = sum(shares.values())
            options.append([(c, shares.get(c, 0.0) / total) for c in feature.categories])
        else:
            options.append([(feature.observed_mean or 0.0, 1.0)])

    def game(known: frozenset[int]) -> float:
        total = 0.0
        for combination in np.ndindex(*[len(o) for o in options]):
            weight = 1.0
            values = []
            for index, (pick, choices) in enumerate(zip(combination, options, strict=True)):
                value, share = choices[pick]
                if index in known:  # the row's value, once (not once per baseline value)
                    values.append(row[index])
                    weight *= 1.0 if pick == 0 else 0.0
                else:
                    values.append(value)
                    weight *= share
            if weight:
                total += weight * output(values)
        return total

    return game


def test_linear_pipeline_with_one_hot_equals_enumeration(tmp_path: Path) -> None:
    pipeline = fit_pets_pipeline()
    frame, _ = pets_frame()
    described = pets_features()
    described[0] = described[0].model_copy(
        update={"observed_frequencies": {"black": 0.5, "ginger": 0.2, "white": 0.3}}
    )
    described[1] = described[1].model_copy(update={"observed_mean": 4.1})
    described[2] = described[2].model_copy(update={"observed_mean": 7.5})
    model = load(
        tmp_path, pipeline, "pets", described, task="classification", classes=["cat", "dog"]
    )
    explainer = build_explainer(model)
    assert not isinstance(explainer, str)
    assert (explainer.method, explainer.output) == ("linear", "margin")
    rows = [tuple(r) for r in frame.head(8).itertuples(index=False)]
    rows = [(str(c), float(w), int(a)) for c, w, a in rows]
    for column, sign in ((1, 1.0), (0, -1.0)):
        found = explainer.explain(rows, np.full(len(rows), column))

        def margin(values: list[Any], sign: float = sign) -> float:
            one = pd.DataFrame([values], columns=["colour", "weight", "age"])
            return sign * float(pipeline.decision_function(one)[0])

        for row, contributions, base in zip(rows, found.contributions, found.base, strict=True):
            game = baseline_game(model, list(row), margin)
            np.testing.assert_allclose(contributions, shapley(game, 3), atol=TOLERANCE)
            assert base == pytest.approx(game(frozenset()), abs=TOLERANCE)


@pytest.mark.parametrize(
    "estimator",
    [
        Ridge(alpha=0.5),
        make_pipeline(MinMaxScaler(clip=True), Ridge(alpha=0.5)),
        make_pipeline(StandardScaler(), LogisticRegression()),
    ],
    ids=["ridge", "clipped-min-max-ridge", "scaled-logistic"],
)
def test_linear_models_equal_enumeration(tmp_path: Path, estimator: Any) -> None:
    x, y = data()
    classifier = isinstance(
        estimator[-1] if hasattr(estimator, "steps") else estimator, LogisticRegression
    )
    target = y if classifier else x @ np.array([1.0, -2.0, 0.5, 3.0])
    fitted = estimator.fit(x, target)
    means = x.mean(axis=0)
    described = [
        f.model_copy(update={"observed_mean": float(m)})
        for f, m in zip(features(4), means, strict=True)
    ]
    card: dict[str, Any] = (
        {"task": "classification", "classes": ["no", "yes"]}
        if classifier
        else {"task": "regression"}
    )
    model = load(tmp_path, fitted, "linear", described, **card)
    explainer = build_explainer(model)
    assert not isinstance(explainer, str) and explainer.method == "linear"
    rows = rows_to_explain()
    found = explainer.explain(rows, np.ones(len(rows), dtype=np.intp) if classifier else None)

    def output(values: list[Any]) -> float:
        one = np.array([values], dtype=np.float64)
        return float((fitted.decision_function if classifier else fitted.predict)(one)[0])

    for row, contributions, base in zip(rows, found.contributions, found.base, strict=True):
        game = baseline_game(model, list(row), output)
        np.testing.assert_allclose(contributions, shapley(game, 4), atol=TOLERANCE)
        assert base == pytest.approx(game(frozenset()), abs=TOLERANCE)


def test_other_estimators_are_enumerated_exactly(tmp_path: Path) -> None:
    x, y = data()
    target = x @ np.array([1.0, -2.0, 0.5, 3.0])
    knn = KNeighborsRegressor(n_neighbors=5).fit(x, target)
    means = x.mean(axis=0)
    described = [
        f.model_copy(update={"observed_mean": float(m)})
        for f, m in zip(features(4), means, strict=True)
    ]
    model = load(tmp_path, knn, "knn", described, task="regression")
    explainer = build_explainer(model)
    assert not isinstance(explainer, str)
    assert (explainer.method, explainer.output) == ("exact-shapley", "value")
    rows = rows_to_explain()
    found = explainer.explain(rows, None)
    for row, contributions, base in zip(rows, found.contributions, found.base, strict=True):
        game = baseline_game(model, list(row), lambda v: float(knn.predict(np.array([v]))[0]))
        np.testing.assert_allclose(contributions, shapley(game, 4), atol=TOLERANCE)
        assert base == pytest.approx(game(frozenset()), abs=TOLERANCE)
    np.testing.assert_allclose(found.output, knn.predict(rows), atol=TOLERANCE)


def test_a_model_too_wide_to_enumerate_is_not_explained(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 11))
    svc = SVC().fit(x, np.where(x[:, 0] > 0, "a", "b"))
    model = load(tmp_path, svc, "wide", features(11), task="classification", classes=["a", "b"])
    reason = plan(model)
    assert isinstance(reason, str) and "11 features" in reason
    assert build_explainer(model) == reason


def test_gradient_boosting_regressor_is_exact(tmp_path: Path) -> None:
    x, _ = data()
    target = x @ np.array([1.0, -2.0, 0.5, 3.0])
    boosted = GradientBoostingRegressor(n_estimators=5, max_depth=2, random_state=0).fit(x, target)
    model = load(tmp_path, boosted, "gbr", features(4), task="regression")
    explainer = build_explainer(model)
    assert not isinstance(explainer, str)
    rows = rows_to_explain()
    found = explainer.explain(rows, None)
    np.testing.assert_allclose(found.output, boosted.predict(rows), atol=TOLERANCE)
