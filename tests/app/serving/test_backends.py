"""Differential tests: every fast evaluator against sklearn's own outputs, to the bit."""

import warnings
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_breast_cancer, load_iris, make_regression
from sklearn.ensemble import (
    ExtraTreesClassifier,
    ExtraTreesRegressor,
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MinMaxScaler, OneHotEncoder, StandardScaler
from sklearn.svm import SVC
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor
from threadpoolctl import threadpool_limits

from app.serving.backends import Evaluator, check_parity, compile_evaluator, parity_rows

Data = tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]


@pytest.fixture(autouse=True, scope="module")
def one_openmp_thread() -> Iterator[None]:
    """HistGradientBoosting's OpenMP threads crawl on a busy 2-core box; its results do not
    depend on the thread count (rows are independent), so one thread keeps this module fast."""
    with threadpool_limits(limits=1, user_api="openmp"):
        yield


def cancer() -> Data:
    x, y = load_breast_cancer(return_X_y=True)
    return x, y


def iris() -> Data:
    x, y = load_iris(return_X_y=True)
    return x, np.array(["setosa", "versicolor", "virginica"])[y]


def regression() -> Data:
    x, y = make_regression(n_samples=400, n_features=8, noise=5.0, random_state=0)
    return x, y


def with_category(data: Data) -> Data:
    # The first eight columns, the last made categorical (three levels) for the encoder.
    x, y = data
    x = x[:, :8].copy()
    x[:, -1] = np.arange(len(x)) % 3
    return x, y


def column_pipeline() -> Any:
    columns = ColumnTransformer(
        [
            ("scaled", StandardScaler(), [0, 1, 2]),
            ("ranged", MinMaxScaler(clip=True), [3, 4]),
            ("onehot", OneHotEncoder(sparse_output=False, handle_unknown="ignore"), [7]),
            ("dropped", "drop", [6]),
        ],
        remainder="passthrough",
    )
    return make_pipeline(columns, LogisticRegression())


def bits_equal(a: Any, b: Any) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.dtype.kind == "f":
        return bool(a.tobytes() == b.tobytes())
    return bool(np.array_equal(a, b))


def generated_rows(x: np.ndarray[Any, Any], n: int, seed: int = 0) -> np.ndarray[Any, Any]:
    """Training rows jittered, plus rows uniform over (and a little past) each column's range."""
    rng = np.random.default_rng(seed)
    low, high = x.min(axis=0), x.max(axis=0)
    span = high - low
    jittered = x[rng.integers(0, len(x), n // 2)] + rng.normal(0, 0.05, (n // 2, x.shape[1])) * span
    uniform = rng.uniform(low - 0.1 * span, high + 0.1 * span, (n - n // 2, x.shape[1]))
    return np.concatenate([jittered, uniform])


def assert_matches(model: Any, evaluator: Evaluator, rows: Any) -> None:
    """Whole batch, a few batch sizes, and single rows: the evaluators pick strategies by size."""
    n = len(rows)
    take: Callable[[int, int], Any] = (
        (lambda a, b: rows.iloc[a:b]) if hasattr(rows, "iloc") else (lambda a, b: rows[a:b])
    )
    spans = [(0, n), (0, 1), (5, 6), (0, 7), (10, 74), (0, min(n, 600))]
    for a, b in spans:
        batch = take(a, b)
        assert bits_equal(evaluator.predict(batch), model.predict(batch)), (a, b)
        if evaluator.predict_proba is not None:
            got, want = evaluator.predict_proba(batch), model.predict_proba(batch)
            assert bits_equal(got, want), (a, b)
    assert check_parity(model, evaluator, rows) is None


LINEAR: dict[str, Callable[[], tuple[Any, Data]]] = {
    "logistic-binary-scaled": lambda: (
        make_pipeline(StandardScaler(), LogisticRegression()),
        cancer(),
    ),
    "logistic-multinomial": lambda: (LogisticRegression(max_iter=1000), iris()),
    "logistic-minmax-clip": lambda: (
        make_pipeline(MinMaxScaler(clip=True), LogisticRegression()),
        iris(),
    ),
    "linear-regression": lambda: (LinearRegression(), regression()),
    "ridge": lambda: (Ridge(alpha=0.5), regression()),
    "ridge-scaled": lambda: (make_pipeline(StandardScaler(), Ridge()), regression()),
    "column-transformer": lambda: (column_pipeline(), with_category(cancer())),
}


@pytest.mark.parametrize("case", sorted(LINEAR))
def test_linear_models_match_sklearn_bit_for_bit(case: str) -> None:
    model, (x, y) = LINEAR[case]()
    model.fit(x, y)
    evaluator = compile_evaluator(model)
    assert isinstance(evaluator, Evaluator), evaluator
    assert evaluator.name == "numpy-linear"
    assert (evaluator.predict_proba is not None) == hasattr(model, "predict_proba")
    rows = generated_rows(x, 3000)
    if case == "column-transformer":
        rows[:, -1] = np.random.default_rng(1).integers(0, 4, len(rows))  # 3 is unknown
    assert_matches(model, evaluator, rows)


def frame_data() -> tuple[pd.DataFrame, np.ndarray[Any, Any]]:
    rng = np.random.default_rng(0)
    n = 300
    frame = pd.DataFrame(
        {
            "width": rng.normal(5, 2, n),
            "colour": rng.choice(["red", "green", "blue"], n),
            "height": rng.normal(1, 0.5, n),
        }
    )
    y = (frame["width"] + (frame["colour"] == "red") * 2 > 6).to_numpy()
    return frame, y


def test_dataframe_pipeline_selects_columns_by_name_and_encodes_strings() -> None:
    frame, y = frame_data()
    columns = ColumnTransformer(
        [
            ("numbers", StandardScaler(), ["width", "height"]),
            ("colour", OneHotEncoder(sparse_output=False, handle_unknown="ignore"), ["colour"]),
        ]
    )
    model = make_pipeline(columns, LogisticRegression()).fit(frame, y)
    evaluator = compile_evaluator(model)
    assert isinstance(evaluator, Evaluator), evaluator
    rng = np.random.default_rng(2)
    rows = pd.DataFrame(
        {
            "width": rng.normal(5, 3, 2000),
            "colour": rng.choice(["red", "green", "blue", "mauve"], 2000),  # mauve: unknown
            "height": rng.normal(1, 1, 2000),
        }
    )
    assert_matches(model, evaluator, rows)


def fitted_trees() -> dict[str, tuple[Any, np.ndarray[Any, Any]]]:
    xc, yc = cancer()
    xi, yi = iris()
    xr, yr = regression()
    missing = xc.copy()
    missing[np.random.default_rng(0).random(missing.shape) < 0.1] = np.nan
    models: dict[str, tuple[Any, Data]] = {
        "tree-classifier": (DecisionTreeClassifier(random_state=0), (xi, yi)),
        "tree-regressor": (DecisionTreeRegressor(random_state=0), (xr, yr)),
        "forest-binary": (RandomForestClassifier(100, random_state=0, n_jobs=1), (xc, yc)),
        "forest-multiclass": (RandomForestClassifier(20, random_state=0), (xi, yi)),
        "forest-regressor": (RandomForestRegressor(20, random_state=0), (xr, yr)),
        "extra-classifier": (ExtraTreesClassifier(20, random_state=0), (xi, yi)),
        "extra-regressor": (ExtraTreesRegressor(20, random_state=0), (xr, yr)),
        "boosting-binary": (GradientBoostingClassifier(n_estimators=40, random_state=0), (xc, yc)),
        "boosting-multiclass": (
            GradientBoostingClassifier(n_estimators=20, random_state=0),
            (xi, yi),
        ),
        "boosting-regressor": (
            GradientBoostingRegressor(n_estimators=40, random_state=0),
            (xr, yr),
        ),
        "boosting-huber-zero-init": (
            GradientBoostingRegressor(loss="huber", init="zero", n_estimators=20, random_state=0),
            (xr, yr),
        ),
        "hist-binary-missing": (HistGradientBoostingClassifier(max_iter=30), (missing, yc)),
        "hist-multiclass": (HistGradientBoostingClassifier(max_iter=15), (xi, yi)),
        "hist-regressor": (HistGradientBoostingRegressor(max_iter=30), (xr, yr)),
        "hist-poisson": (
            HistGradientBoostingRegressor(loss="poisson", max_iter=20),
            (xr, np.abs(yr)),
        ),
    }
    return {name: (model.fit(x, y), x) for name, (model, (x, y)) in models.items()}


@pytest.fixture(scope="module")
def tree_models() -> dict[str, tuple[Any, np.ndarray[Any, Any]]]:
    return fitted_trees()


TREE_CASES = [
    "tree-classifier",
    "tree-regressor",
    "forest-binary",
    "forest-multiclass",
    "forest-regressor",
    "extra-classifier",
    "extra-regressor",
    "boosting-binary",
    "boosting-multiclass",
    "boosting-regressor",
    "boosting-huber-zero-init",
    "hist-binary-missing",
    "hist-multiclass",
    "hist-regressor",
    "hist-poisson",
]


@pytest.mark.parametrize("case", TREE_CASES)
def test_tree_models_match_sklearn_bit_for_bit_on_and_around_thresholds(
    case: str, tree_models: dict[str, tuple[Any, np.ndarray[Any, Any]]]
) -> None:
    model, x = tree_models[case]
    evaluator = compile_evaluator(model)
    assert isinstance(evaluator, Evaluator), evaluator
    assert evaluator.name == "numpy-trees"
    rng = np.random.default_rng(3)
    generated = generated_rows(np.nan_to_num(x, nan=0.0), 2000)
    if case.startswith("hist"):
        generated[rng.random(generated.shape) < 0.05] = np.nan  # its own missing-value path
    low, high = np.nanmin(x, axis=0), np.nanmax(x, axis=0)
    rows = parity_rows(model, generated, low, high, rng)
    on_thresholds = rows[len(generated) + 256 :]
    assert len(on_thresholds) >= 6, "a tree model must get rows on its thresholds"
    assert_matches(model, evaluator, rows)
    # The threshold rows alone, also one at a time for a sample (the one-row strategy).
    assert_matches(model, evaluator, on_thresholds)
    for i in rng.choice(len(on_thresholds), 40, replace=False):
        row = on_thresholds[i : i + 1]
        assert bits_equal(evaluator.predict(row), model.predict(row)), i


def test_threshold_rows_sit_on_each_float32_threshold_and_one_ulp_either_side() -> None:
    x, y = iris()
    model = DecisionTreeClassifier(random_state=0).fit(x, y)
    tree = model.tree_
    rows = parity_rows(model, None, None, None, np.random.default_rng(0))
    split = tree.children_left != -1
    for feature, threshold in zip(tree.feature[split], tree.threshold[split], strict=True):
        at = np.float32(threshold)
        column = rows[:, feature]
        for value in (
            at,
            np.nextafter(at, np.float32(-np.inf)),
            np.nextafter(at, np.float32(np.inf)),
        ):
            assert (column == np.float64(value)).any()
        assert (column == threshold).any()


def test_forest_one_row_is_the_fast_path() -> None:
    x, y = cancer()
    model = RandomForestClassifier(10, random_state=0, n_jobs=1).fit(x, y)
    evaluator = compile_evaluator(model)
    assert isinstance(evaluator, Evaluator)
    assert evaluator.max_rows is None
    assert bits_equal(evaluator.predict_proba(x[:1]), model.predict_proba(x[:1]))  # type: ignore[misc]


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        (SVC(), "SVC: no fast evaluator"),
        (KNeighborsClassifier(), "KNeighborsClassifier: no fast evaluator"),
        (make_pipeline(StandardScaler(), SVC()), "Pipeline ending in SVC"),
        (RandomForestClassifier(5, n_jobs=2, random_state=0), "n_jobs=2"),
        (make_pipeline(StandardScaler(), RandomForestClassifier(5)), "Pipeline ending in"),
    ],
)
def test_unsupported_estimators_get_a_reason(model: Any, expected: str) -> None:
    x, y = cancer()
    model.fit(x, y)
    reason = compile_evaluator(model)
    assert isinstance(reason, str)
    assert expected in reason


def test_categorical_hist_gradient_boosting_gets_a_reason() -> None:
    x, y = with_category(cancer())
    model = HistGradientBoostingClassifier(max_iter=5, categorical_features=[7]).fit(x, y)
    reason = compile_evaluator(model)
    assert isinstance(reason, str) and "categorical" in reason


def test_unfitted_estimator_gets_a_reason() -> None:
    reason = compile_evaluator(LogisticRegression())
    assert isinstance(reason, str) and reason.startswith("LogisticRegression")


def test_check_parity_catches_one_ulp() -> None:
    x, y = iris()
    model = RandomForestClassifier(10, random_state=0).fit(x, y)
    good = compile_evaluator(model)
    assert isinstance(good, Evaluator) and good.predict_proba is not None
    exact = good.predict_proba

    def off_by_one_ulp(rows: Any) -> np.ndarray[Any, Any]:
        proba = exact(rows).copy()
        if len(proba) > 3:
            proba[3, 1] = np.nextafter(proba[3, 1], 2.0)
        return proba

    bad = Evaluator(good.name, good.predict, off_by_one_ulp)
    rows = generated_rows(x, 100)
    reason = check_parity(model, bad, rows)
    assert reason is not None and "predict_proba" in reason and "row 3" in reason
    assert check_parity(model, good, rows) is None


def outcome(predict: Callable[[Any], Any], rows: Any) -> tuple[str, Any, list[str]]:
    """The value or the error message, and the warnings given on the way."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result: tuple[str, Any] = ("value", np.asarray(predict(rows)))
        except ValueError as error:
            result = ("error", str(error))
    return (*result, [f"{w.category.__name__}: {w.message}" for w in caught])


def test_inputs_outside_the_fast_path_get_sklearns_answer() -> None:
    """Integers, NaN (a forest takes it, a logistic regression refuses it) and values that
    overflow float32: whatever sklearn answers, value or error, the evaluator answers."""
    x, y = cancer()
    forest = RandomForestClassifier(5, random_state=0).fit(x, y)
    linear = make_pipeline(StandardScaler(), LogisticRegression()).fit(x, y)
    as_ints = np.rint(x[:20]).astype(np.int64)
    too_big = x[:3].copy()
    too_big[0, 0] = 1e300
    with_nan = x[:3].copy()
    with_nan[1, 2] = np.nan
    for model in (forest, linear):
        evaluator = compile_evaluator(model)
        assert isinstance(evaluator, Evaluator)
        for rows in (as_ints, too_big, with_nan):
            kind, want, want_warnings = outcome(model.predict, rows)
            got_kind, got, got_warnings = outcome(evaluator.predict, rows)
            assert (got_kind, got_warnings) == (kind, want_warnings)
            assert bits_equal(got, want) if kind == "value" else got == want
