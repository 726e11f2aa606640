from pydantic import Field

from schemas.predict import PredictionResponse


class FilePredictionResponse(PredictionResponse):
    filename: str | None = Field(description="Name of the uploaded file, as the client sent it.")
    rows: int = Field(description="Rows predicted (1 for an image).")
