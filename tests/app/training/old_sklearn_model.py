"""Run by the older scikit-learn's virtualenv (.venv-oldsklearn): fit a small classifier and save
it with joblib at the path given, printing the scikit-learn version that saved it."""

import sys

import joblib
import numpy as np
import sklearn
from sklearn.linear_model import LogisticRegression

rng = np.random.default_rng(0)
x = np.vstack([rng.normal(centre, 0.3, size=(30, 2)) for centre in (0.0, 2.0)])
y = np.repeat(np.array(["low", "high"]), 30)
joblib.dump(LogisticRegression().fit(x, y), sys.argv[1])
print(sklearn.__version__)  # noqa: T201 - read by the test
