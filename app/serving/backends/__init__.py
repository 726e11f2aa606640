"""Fast evaluators for fitted scikit-learn models, bit for bit identical to sklearn 1.9.1.

    compile_evaluator(estimator) -> Evaluator | str   # the fast path, or why there is none
    parity_rows(estimator, rows, low, high, rng)      # rows worth checking at load
    check_parity(estimator, evaluator, rows)          # None, or the first mismatch

A single-row sklearn call is mostly input validation (and, for forests, joblib's per-tree
tasks); these evaluators repeat only the arithmetic, in sklearn's own order, so results
are identical to the bit. Anything they cannot vouch for (another estimator type, a
setting that changes the arithmetic) gets a reason string instead. Inputs outside an
evaluator's fast path are passed to the estimator itself.

Depends only on numpy, scipy and scikit-learn; call check_parity before trusting an
evaluator (scikit-learn's private attributes are read, and it is pinned for that reason).
"""

from typing import Any

from sklearn.pipeline import Pipeline

from app.serving.backends.evaluator import Evaluator
from app.serving.backends.hist import HIST, compile_hist
from app.serving.backends.linear import LINEAR_TYPES, compile_linear
from app.serving.backends.parity import check_parity, parity_rows
from app.serving.backends.trees import BOOSTED, FORESTS, SINGLE, compile_trees

__all__ = ["Evaluator", "check_parity", "compile_evaluator", "parity_rows"]


def compile_evaluator(estimator: Any) -> Evaluator | str:
    """An Evaluator for a fitted estimator, or the reason there is none."""
    kind = type(estimator)
    label = kind.__name__
    # Exact types: a subclass may override any step of the arithmetic.
    if kind in LINEAR_TYPES or kind is Pipeline:
        compile_ = compile_linear
    elif kind in FORESTS or kind in SINGLE or kind in BOOSTED:
        compile_ = compile_trees
    elif kind in HIST:
        compile_ = compile_hist
    else:
        return f"{label}: no fast evaluator"
    try:
        return compile_(estimator)
    except Exception as error:  # an unfitted or unusual estimator must not break loading
        return f"{label}: no fast evaluator ({type(error).__name__}: {error})"
