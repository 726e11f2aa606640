"""The naive FastAPI port of the Flask prototype: a `def` route with a pydantic body model, the
same joblib-loaded models, `predict` per request, a dict returned. What a first port looks like
before any work on the hot path.

Served with `gunicorn -w 1 -k uvicorn_worker.UvicornWorker benchmarks.apps.naive_fastapi:app`.
"""

from typing import Any

import numpy as np
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

from benchmarks.apps import load_first_versions

MODELS = load_first_versions()

app = FastAPI()


class PredictionRequest(BaseModel):
    instances: list[list[float]]


@app.post("/models/{name}/predict")
def predict(name: str, body: PredictionRequest) -> dict[str, Any]:
    model = MODELS.get(name)
    if model is None:
        raise HTTPException(status_code=404, detail=f"unknown model {name}")
    rows = np.array(body.instances, dtype=float)
    reply: dict[str, Any] = {"predictions": model.predict(rows).tolist()}
    # Probabilities too, as modelport returns them (see flask_prototype).
    if hasattr(model, "predict_proba"):
        reply["probabilities"] = model.predict_proba(rows).tolist()
    return reply
