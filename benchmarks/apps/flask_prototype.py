"""The Flask prototype modelport replaces, written the way a hand-rolled model server usually is:
models loaded with joblib at import, `request.get_json()`, `predict` per request, `jsonify`.

Served like it was in production: `gunicorn -w 1 benchmarks.apps.flask_prototype:app` (sync
workers, so one request at a time and no keep-alive).
"""

from typing import Any

import numpy as np
from flask import Flask, Response, jsonify, request

from benchmarks.apps import load_first_versions

MODELS = load_first_versions()

app = Flask(__name__)


@app.post("/models/<name>/predict")
def predict(name: str) -> Response | tuple[Response, int]:
    model = MODELS.get(name)
    if model is None:
        return jsonify(error=f"unknown model {name}"), 404
    rows = np.array(request.get_json()["instances"], dtype=float)
    reply: dict[str, Any] = {"predictions": model.predict(rows).tolist()}
    # modelport answers with class probabilities, so the prototype computes them too: otherwise
    # the comparison would charge modelport for a second estimator call the prototype skips.
    if hasattr(model, "predict_proba"):
        reply["probabilities"] = model.predict_proba(rows).tolist()
    return jsonify(reply)
