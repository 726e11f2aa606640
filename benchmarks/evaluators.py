"""`python -m benchmarks.evaluators`: each fast evaluator's time beside scikit-learn's own, in one
process, on the same rows (1, 64 and 10,000), min of 5 repeats, with the ratio. Prints the load
average first: on a busy machine both sides slow down, the ratios much less.

A microbenchmark of app.serving.backends alone (no HTTP); `make bench` measures the server.
"""

import os
import timeit
from collections.abc import Callable
from typing import Any

import numpy as np
from sklearn.datasets import load_breast_cancer, load_iris, make_regression
from sklearn.ensemble import (
    ExtraTreesRegressor,
    GradientBoostingClassifier,
    HistGradientBoostingClassifier,
    RandomForestClassifier,
)
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.tree import DecisionTreeClassifier
from threadpoolctl import threadpool_limits

from app.serving.backends import check_parity, compile_evaluator

ROW_COUNTS = (1, 64, 10_000)


def _models() -> dict[str, tuple[Any, Any, Any]]:
    xb, yb = load_breast_cancer(return_X_y=True)
    xi, yi = load_iris(return_X_y=True)
    xr, yr = make_regression(1000, 20, noise=1, random_state=0)
    return {
        "LogisticRegression binary (StandardScaler pipeline), breast cancer": (
            make_pipeline(StandardScaler(), LogisticRegression()),
            xb,
            yb,
        ),
        "LogisticRegression multinomial, iris": (LogisticRegression(max_iter=1000), xi, yi),
        "Ridge, 20 features": (Ridge(), xr, yr),
        "DecisionTreeClassifier, breast cancer": (DecisionTreeClassifier(random_state=0), xb, yb),
        "RandomForestClassifier, 100 trees, breast cancer": (
            RandomForestClassifier(random_state=0, n_jobs=1),
            xb,
            yb,
        ),
        "ExtraTreesRegressor, 100 trees": (ExtraTreesRegressor(random_state=0), xr, yr),
        "GradientBoostingClassifier, 100 trees, breast cancer": (
            GradientBoostingClassifier(random_state=0),
            xb,
            yb,
        ),
        "HistGradientBoostingClassifier, 100 iterations, breast cancer": (
            HistGradientBoostingClassifier(random_state=0),
            xb,
            yb,
        ),
    }


def _best(call: Callable[[], Any], number: int) -> float:
    return min(timeit.repeat(call, number=number, repeat=5)) / number


def main() -> None:
    print(f"load average at the start: {os.getloadavg()[0]:.2f}")  # noqa: T201
    print(  # noqa: T201
        "| model (method) | "
        + " | ".join(f"{n:,} rows: sklearn / fast / ratio" for n in ROW_COUNTS)
        + " |"
    )
    print("|---|" + "---|" * len(ROW_COUNTS))  # noqa: T201
    rng = np.random.default_rng(0)
    # One OpenMP thread, as in every modelport worker.
    with threadpool_limits(limits=1, user_api="openmp"):
        for name, (estimator, x, y) in _models().items():
            estimator.fit(x, y)
            evaluator = compile_evaluator(estimator)
            assert not isinstance(evaluator, str), evaluator
            method = "predict_proba" if evaluator.predict_proba else "predict"
            cells = []
            for count in ROW_COUNTS:
                rows = x[rng.integers(0, len(x), count)]
                assert check_parity(estimator, evaluator, rows[:300]) is None
                slow, fast = getattr(estimator, method), getattr(evaluator, method)
                number = max(1, 100 // count) if count < 10_000 else 3
                sklearn_s = _best(lambda: slow(rows), number)  # noqa: B023
                fast_s = _best(lambda: fast(rows), number)  # noqa: B023
                cells.append(
                    f"{sklearn_s * 1e3:.3f} ms / {fast_s * 1e3:.3f} ms / {fast_s / sklearn_s:.3f}×"
                )
            print(f"| {name} ({method}) | " + " | ".join(cells) + " |")  # noqa: T201


if __name__ == "__main__":
    main()
