from typing import Literal

from pydantic import BaseModel, Field


class HealthStatus(BaseModel):
    status: Literal["ok"] = "ok"


class ReadinessStatus(BaseModel):
    status: Literal["ready", "not ready"]
    models: int = Field(description="Model versions loaded and serving.")
    unavailable: dict[str, str] = Field(
        default_factory=dict, description="Model versions refused at load, with the reason."
    )
