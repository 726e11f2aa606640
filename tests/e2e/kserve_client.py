"""Drive modelport with KServe's own `InferenceRESTClient`, unmodified.

Run by the KServe virtualenv's Python (KServe needs pandas<3, so it cannot share modelport's
environment): reads a job as JSON on stdin, prints what the client saw as JSON on stdout.
"""

import asyncio
import json
import sys
from typing import Any

import numpy as np
from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig


async def drive(job: dict[str, Any]) -> dict[str, Any]:
    client = InferenceRESTClient(RESTConfig(protocol="v2", retries=0, timeout=30))
    url, model = job["url"], job["model"]
    seen: dict[str, Any] = {
        "live": await client.is_server_live(url),
        "ready": await client.is_server_ready(url),
        "model_ready": await client.is_model_ready(url, model),
    }
    rows = np.asarray(job["rows"], dtype=np.float64)
    tensor = InferInput(name="input-0", shape=list(rows.shape), datatype="FP64")
    tensor.set_data_from_numpy(rows, binary_data=job["binary"])
    parameters = {"binary_data_output": True} if job["binary"] else None
    request = InferRequest(
        model_name=model, infer_inputs=[tensor], request_id=job["id"], parameters=parameters
    )
    response = await client.infer(url, request, model_name=model)
    seen["id"] = response.id
    seen["model_name"] = response.model_name
    seen["outputs"] = {}
    for output in response.outputs:
        values = output.as_numpy()
        if values.dtype == object:  # BYTES
            values = np.vectorize(lambda v: v.decode() if isinstance(v, bytes) else v)(values)
        seen["outputs"][output.name] = values.tolist()
    await client.close()
    return seen


if __name__ == "__main__":
    print(json.dumps(asyncio.run(drive(json.load(sys.stdin)))))  # noqa: T201 - the test reads stdout
