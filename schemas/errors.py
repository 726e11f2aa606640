from typing import Any

from pydantic import BaseModel, Field


class ValidationIssue(BaseModel):
    loc: list[int | str]
    msg: str
    type: str


class ErrorResponse(BaseModel):
    """The envelope of every non-2xx answer outside `/v2`."""

    error: str = Field(
        description="Kind of error, e.g. ModelNotFound, InvalidInput.", examples=["ModelNotFound"]
    )
    detail: str | list[ValidationIssue] | Any = Field(
        description="A message, or for InvalidInput pydantic's list of {loc, msg, type}."
    )
