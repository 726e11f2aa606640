"""The apps modelport is compared with, each served by gunicorn with one worker.

They read the same model store as modelport (`MODELPORT_MODEL_DIR`), so every configuration
answers with the same fitted estimators.
"""

import os
from pathlib import Path
from typing import Any

import joblib


def load_first_versions() -> dict[str, Any]:
    """`{name: estimator}` for every model in the store, from its lowest version: the apps being
    replaced predate versions and load one `model.joblib` per model at import."""
    store = Path(os.environ.get("MODELPORT_MODEL_DIR", "models"))
    models: dict[str, Any] = {}
    for model_dir in sorted(path for path in store.iterdir() if path.is_dir()):
        versions = sorted(
            (path for path in model_dir.iterdir() if path.name.isdigit()),
            key=lambda path: int(path.name),
        )
        if versions and (versions[0] / "model.joblib").is_file():
            models[model_dir.name] = joblib.load(versions[0] / "model.joblib")
    return models
