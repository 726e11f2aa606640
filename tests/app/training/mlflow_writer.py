"""Run in a subprocess by the MLflow import tests: real MLflow models, written by mlflow-skinny
itself into the directory given (the working directory), the way users write them.

    saved-pickle/   mlflow.sklearn.save_model: an array-fitted classifier, pickle, ndarray example
    saved-skops/    the same call on the pets DataFrame pipeline, MLflow's default format (skops)
    mlruns/         a file store: the pets pipeline logged in a run (cloudpickle), registered as
                    "pets" v1 with a description and the alias "champion"
    mlflow.db       with `sqlite` in argv: the same in a SQLite store (needs SQLAlchemy)

Prints a JSON object with the run ids and the model id.
"""

import json
import os
import sys
import warnings
from importlib.metadata import version
from pathlib import Path

import mlflow
import mlflow.sklearn
import numpy
import sklearn
from sklearn.linear_model import LogisticRegression

from tests.conftest import fit_pets_pipeline, flower_data, pets_frame

# Given, so MLflow does not infer them (it would load the model in a subprocess to see what
# it imports: most of the time this script takes otherwise).
REQUIREMENTS = [
    f"scikit-learn=={sklearn.__version__}",
    f"numpy=={numpy.__version__}",
    f"scipy=={version('scipy')}",
]


def log_pets(tracking_uri: str, registered: str) -> dict[str, str]:
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment("byom")
    frame, _ = pets_frame()
    with mlflow.start_run() as run:
        logged = mlflow.sklearn.log_model(
            fit_pets_pipeline(),
            name="model",
            input_example=frame.head(3),
            serialization_format="cloudpickle",
            registered_model_name=registered,
            pip_requirements=REQUIREMENTS,
        )
    client = mlflow.MlflowClient()
    client.update_registered_model(registered, description="Cat or dog, from colour, weight, age")
    client.set_registered_model_alias(registered, "champion", "1")
    return {"run_id": run.info.run_id, "model_id": str(logged.model_id)}


def main() -> None:
    warnings.simplefilter("ignore")  # MLflow's hints about integer columns and pickles
    here = Path.cwd()
    x, y = flower_data()
    mlflow.sklearn.save_model(
        LogisticRegression(max_iter=1000).fit(x, y),
        str(here / "saved-pickle"),
        input_example=x[:2],
        serialization_format="pickle",
        pip_requirements=REQUIREMENTS,
    )
    frame, _ = pets_frame()
    mlflow.sklearn.save_model(
        fit_pets_pipeline(),
        str(here / "saved-skops"),
        input_example=frame.head(2),
        pip_requirements=REQUIREMENTS,
    )
    written = {"file": log_pets((here / "mlruns").as_uri(), "pets")}
    if "sqlite" in sys.argv[1:]:
        written["sqlite"] = log_pets(f"sqlite:///{here / 'mlflow.db'}", "pets")
    print(json.dumps(written))  # noqa: T201 - read by the test


if __name__ == "__main__":
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    main()
