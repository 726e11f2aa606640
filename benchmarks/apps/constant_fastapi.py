"""Ceiling: a FastAPI route that validates the same body with pydantic and returns a constant.

No model work at all, so no FastAPI app that validates its input can be faster on one core.
`async def`, because there is nothing to keep off the event loop (a `def` route would add a
thread-pool hop and lower the ceiling).
"""

from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel

app = FastAPI()

CONSTANT_REPLY: dict[str, Any] = {"predictions": ["constant"]}


class PredictionRequest(BaseModel):
    instances: list[list[float]]


@app.post("/models/{name}/predict")
async def predict(name: str, body: PredictionRequest) -> dict[str, Any]:
    return CONSTANT_REPLY
