"""Open Inference Protocol (KServe V2 / Triton / MLServer) REST shapes.

From the protocol's `inference_rest.md`; field names follow the specification exactly.
"""

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Datatype = Literal[
    "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
    "FP16", "FP32", "FP64", "BYTES",
]  # fmt: skip
Parameters = dict[str, str | int | float | bool]


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class LiveStatus(BaseModel):
    live: bool


class ReadyStatus(BaseModel):
    ready: bool


class ModelReadyStatus(BaseModel):
    name: str
    ready: bool


class TensorMetadata(BaseModel):
    name: str
    datatype: Datatype
    shape: list[int] = Field(description="-1 marks a variable dimension (the batch).")


class ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]
    parameters: Parameters | None = None


class RequestInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=256)
    shape: list[int] = Field(min_length=1, max_length=8)
    datatype: Datatype
    parameters: Parameters | None = None
    data: list[Any] | None = Field(
        default=None, description="Row-major, nested or flat. Absent when sent as binary."
    )


class RequestOutput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    parameters: Parameters | None = None


class InferenceRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(default=None, max_length=256)
    # Not in the specification's request, but KServe's client sends them; the path decides.
    model_name: str | None = Field(default=None, max_length=256)
    model_version: str | None = Field(default=None, max_length=64)
    parameters: Parameters | None = None
    inputs: list[RequestInput] = Field(min_length=1, max_length=1024)
    outputs: list[RequestOutput] | None = Field(default=None, max_length=8)


class ResponseOutput(BaseModel):
    name: str
    shape: list[int]
    datatype: Datatype
    parameters: Parameters | None = None
    data: list[Any] | None = None


class InferenceResponse(BaseModel):
    model_name: str
    model_version: str | None = None
    id: str | None = None
    parameters: Parameters | None = None
    outputs: list[ResponseOutput]


class V2Error(BaseModel):
    error: str


# The model repository extension (`inference_rest.md`, "Model Repository Extension").
class RepositoryIndexRequest(BaseModel):
    # Strict: `0` or `"yes"` is not a boolean (as in every other request model's numbers).
    ready: bool = Field(default=False, strict=True, description="Only the versions ready to serve.")


class RepositoryIndexEntry(BaseModel):
    name: str
    version: str | None = Field(
        default=None, description="Absent on a row about the model name as a whole."
    )
    state: Literal["READY", "UNAVAILABLE", "UNLOADED"] = Field(
        description="READY: serving. UNAVAILABLE: in the store but refused (see reason). UNLOADED: unloaded through this API."
    )
    reason: str = Field(description="Why the version is not ready; empty when READY.")


class RepositoryLoadRequest(BaseModel):
    parameters: dict[str, Any] | None = Field(
        default=None,
        strict=True,
        description="Accepted and ignored (Triton's `config` and files included).",
    )


class RepositoryUnloadRequest(BaseModel):
    parameters: dict[str, Any] | None = Field(
        default=None,
        strict=True,
        description="Accepted and ignored (Triton's `unload_dependents` included).",
    )


class RepositoryReply(BaseModel):
    """An empty object: the load or unload is done."""
