"""Drive modelport's gRPC port with Triton's `tritonclient.grpc`, unmodified and in its defaults.

Run in a process of its own: tritonclient.grpc registers the protocol's messages (package
`inference`) in protobuf's default pool from its own .proto file, and so does modelport, so the
two cannot be imported into one process (kserve/kserve#3099, triton-inference-server/client#730).
Reads a job as JSON on stdin (a URL and a list of calls), prints one result per call as JSON: the
answer, or the error's status and message.
"""

import json
import sys
from typing import Any

import numpy as np
import tritonclient.grpc as triton
from tritonclient.utils import InferenceServerException

DTYPES = {"FP64": np.float64, "FP32": np.float32, "INT64": np.int64, "BYTES": np.object_}


def tensor(spec: dict[str, Any]) -> triton.InferInput:
    data = spec["data"]
    if spec["datatype"] == "BYTES":
        array = np.array([value.encode() for value in data], dtype=np.object_)
    else:
        array = np.array(data, dtype=DTYPES[spec["datatype"]])
    array = array.reshape(spec["shape"])
    infer_input = triton.InferInput(spec["name"], list(array.shape), spec["datatype"])
    infer_input.set_data_from_numpy(array)
    if "declared_shape" in spec:  # a shape that does not match the data, as a hostile client sends
        infer_input.set_shape(spec["declared_shape"])
    return infer_input


def plain(values: Any) -> Any:
    return [v.decode() if isinstance(v, bytes) else v for v in values.ravel().tolist()]


def call(client: triton.InferenceServerClient, spec: dict[str, Any]) -> Any:
    op, headers = spec["op"], spec.get("headers")
    if op == "live":
        return client.is_server_live(headers=headers)
    if op == "ready":
        return client.is_server_ready(headers=headers)
    if op == "model_ready":
        return client.is_model_ready(spec["model"], spec.get("version", ""), headers=headers)
    if op == "server_metadata":
        return client.get_server_metadata(headers=headers, as_json=True)
    if op == "model_metadata":
        return client.get_model_metadata(
            spec["model"], spec.get("version", ""), headers=headers, as_json=True
        )
    if op == "index":
        return client.get_model_repository_index(headers=headers, as_json=True)
    if op == "load":
        client.load_model(spec["model"], headers=headers)
        return None
    if op == "unload":
        client.unload_model(spec["model"], headers=headers)
        return None
    assert op == "infer", op
    outputs = [triton.InferRequestedOutput(name) for name in spec.get("outputs", [])]
    result = client.infer(
        spec["model"],
        [tensor(item) for item in spec["inputs"]],
        model_version=spec.get("version", ""),
        outputs=outputs or None,
        request_id=spec.get("id", ""),
        headers=headers,
    )
    response = result.get_response()
    return {
        "model_name": response.model_name,
        "model_version": response.model_version,
        "id": response.id,
        "outputs": {
            output.name: {
                "datatype": output.datatype,
                "shape": list(output.shape),
                "data": plain(result.as_numpy(output.name)),
            }
            for output in response.outputs
        },
    }


def main() -> None:
    job = json.load(sys.stdin)
    client = triton.InferenceServerClient(url=job["url"])
    results = []
    for spec in job["calls"]:
        try:
            results.append({"ok": call(client, spec)})
        except InferenceServerException as exc:
            results.append({"error": {"status": exc.status(), "message": exc.message()}})
    client.close()
    print(json.dumps(results))  # noqa: T201 - the test reads stdout


if __name__ == "__main__":
    main()
