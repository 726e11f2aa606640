"""The Open Inference Protocol's metadata over gRPC: the same server and model metadata as REST v2
(app.codecs.v2.metadata), as protobuf messages. `ModelMetadataResponse` has no `parameters`, so
REST's note on how to lay out the inputs has no place here."""

from typing import Any

from app.codecs.grpc.proto import grpc_predict_v2_pb2 as pb
from app.codecs.v2.metadata import model_metadata
from app.codecs.v2.protocol import SERVER_NAME, SERVER_VERSION
from app.serving.model import LoadedModel
from schemas.v2 import TensorMetadata

# The extensions this service offers over gRPC (binary tensor data is REST's own).
GRPC_EXTENSIONS: list[str] = ["model_repository"]


def server_metadata_response() -> Any:
    return pb.ServerMetadataResponse(
        name=SERVER_NAME, version=SERVER_VERSION, extensions=GRPC_EXTENSIONS
    )


def model_metadata_response(model: LoadedModel, versions: list[int]) -> Any:
    metadata = model_metadata(model, versions)
    return pb.ModelMetadataResponse(
        name=metadata.name,
        versions=metadata.versions,
        platform=metadata.platform,
        inputs=[_tensor(tensor) for tensor in metadata.inputs],
        outputs=[_tensor(tensor) for tensor in metadata.outputs],
    )


def _tensor(tensor: TensorMetadata) -> Any:
    return pb.ModelMetadataResponse.TensorMetadata(
        name=tensor.name, datatype=tensor.datatype, shape=tensor.shape
    )
