"""The Evaluator record and the input gate every fast path shares."""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[Any]
Predict = Callable[[Any], Array]


@dataclass(frozen=True)
class Evaluator:
    """A fitted fast path for one estimator.

    `predict` and `predict_proba` take what the estimator itself takes and return the same
    values, dtype and shape. Inputs outside the fast path (another dtype, non-finite values,
    the wrong width, a container the path does not know) are handed to the estimator itself,
    so the result is sklearn's by construction, errors included.

    `max_rows`: above this many rows the caller is better off calling sklearn directly
    (None: the fast path is never slower, as measured; see the module that builds it).
    """

    name: str
    predict: Predict
    predict_proba: Predict | None
    max_rows: int | None = None


def plain_float64(x: Any, n_features: int) -> bool:
    """Whether `x` is an array the fast paths read exactly as sklearn's validation would:
    a 2-D float64 ndarray (not a subclass such as np.matrix) of the fitted width, with
    at least one row."""
    return (
        type(x) is np.ndarray
        and x.dtype == np.float64
        and x.ndim == 2
        and x.shape[1] == n_features
        and x.shape[0] > 0
    )


def all_finite(x: Array) -> bool:
    # The sum is finite only if every value is (an overflowing sum of finite values is
    # the rare false negative, and it only costs a trip through sklearn).
    return bool(np.isfinite(x.sum()))
