"""Drive modelport's gRPC port with KServe's own `InferenceGRPCClient`, unmodified.

Run by the KServe virtualenv's Python (KServe needs pandas<3, and its generated messages could not
share a process with modelport's anyway): reads a job as JSON on stdin (a URL and a list of
calls), prints one result per call as JSON: the answer, or the error's code and message. The
client has no metadata calls; those go through the client's own channel with KServe's generated
stub, the one the client uses for everything else.
"""

import asyncio
import json
import sys
from typing import Any

import grpc
import numpy as np
from kserve import InferenceGRPCClient, InferInput, InferRequest
from kserve.protocol.grpc.grpc_predict_v2_pb2 import ModelMetadataRequest, ServerMetadataRequest

DTYPES = {"FP64": np.float64, "FP32": np.float32, "INT64": np.int64, "BYTES": np.object_}


def tensor(spec: dict[str, Any], binary: bool) -> InferInput:
    data = spec["data"]
    if spec["datatype"] == "BYTES":
        array = np.array([value.encode() for value in data], dtype=np.object_)
    else:
        array = np.array(data, dtype=DTYPES[spec["datatype"]])
    array = array.reshape(spec["shape"])
    infer_input = InferInput(name=spec["name"], shape=list(array.shape), datatype=spec["datatype"])
    infer_input.set_data_from_numpy(array, binary_data=binary)
    return infer_input


def plain(values: Any) -> Any:
    return [v.decode() if isinstance(v, bytes) else v for v in np.ravel(values).tolist()]


def tensors(items: Any) -> list[dict[str, Any]]:
    return [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in items]


def metadata(message: Any) -> dict[str, Any]:
    return {
        "name": message.name,
        "versions": list(message.versions),
        "platform": message.platform,
        "inputs": tensors(message.inputs),
        "outputs": tensors(message.outputs),
    }


async def call(client: InferenceGRPCClient, spec: dict[str, Any]) -> Any:
    op, headers = spec["op"], [tuple(pair) for pair in spec.get("headers", [])]
    if op == "live":
        return await client.is_server_live(headers=headers)
    if op == "ready":
        return await client.is_server_ready(headers=headers)
    if op == "model_ready":
        return await client.is_model_ready(spec["model"], headers=headers)
    stub = client._client_stub
    if op == "server_metadata":
        reply = await stub.ServerMetadata(ServerMetadataRequest(), metadata=headers)
        return {"name": reply.name, "version": reply.version}
    if op == "model_metadata":
        return metadata(await stub.ModelMetadata(ModelMetadataRequest(name=spec["model"])))
    assert op == "infer", op
    request = InferRequest(
        model_name=spec["model"],
        infer_inputs=[tensor(item, spec["binary"]) for item in spec["inputs"]],
        request_id=spec.get("id"),
    )
    response = await client.infer(request, headers=headers)
    return {
        "model_name": response.model_name,
        "model_version": response.model_version,
        "id": response.id,
        "outputs": {
            output.name: {
                "datatype": output.datatype,
                "shape": list(output.shape),
                "data": plain(output.as_numpy()),
            }
            for output in response.outputs
        },
    }


async def drive(job: dict[str, Any]) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    async with InferenceGRPCClient(job["url"], retries=0) as client:
        for spec in job["calls"]:
            try:
                results.append({"ok": await call(client, spec)})
            except grpc.RpcError as exc:
                results.append({"error": {"status": str(exc.code()), "message": exc.details()}})
    return results


if __name__ == "__main__":
    print(json.dumps(asyncio.run(drive(json.load(sys.stdin)))))  # noqa: T201 - the test reads stdout
